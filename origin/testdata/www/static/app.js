document.getElementById("proto").textContent += " (script loaded)";
