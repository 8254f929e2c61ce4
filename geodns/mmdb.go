package geodns

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/oschwald/maxminddb-golang/v2"
)

// cityDB is a MaxMind-format city database (GeoLite2-City or compatible):
// it locates clients by the record's location.latitude/longitude and, as a
// region, its continent code.
type cityDB struct {
	r *maxminddb.Reader
}

// openCityDB reads the database at path into memory. It is read rather
// than mapped so that the garbage collector frees it once no state refers
// to it: a reload replaces the state while queries may still be using the
// old one, so a mapping could be unmapped only when the last of them is
// done, which nothing tracks.
func openCityDB(path string) (*cityDB, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &cityDB{r: r}, nil
}

type cityRecord struct {
	Location struct {
		Latitude  *float64 `maxminddb:"latitude"`
		Longitude *float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
	Continent struct {
		Code string `maxminddb:"code"`
	} `maxminddb:"continent"`
}

// lookup locates ip; the matched network's prefix length is the ECS scope.
func (db *cityDB) lookup(ip netip.Addr) (location, bool) {
	res := db.r.Lookup(ip)
	if !res.Found() {
		return location{}, false
	}
	var rec cityRecord
	if err := res.Decode(&rec); err != nil {
		return location{}, false
	}
	loc := location{region: rec.Continent.Code, known: true, bits: res.Prefix().Bits()}
	if ip.Is4() && res.Prefix().Addr().Is4In6() {
		loc.bits -= 96
	}
	if rec.Location.Latitude != nil && rec.Location.Longitude != nil {
		loc.lat, loc.lon, loc.hasCoord = *rec.Location.Latitude, *rec.Location.Longitude, true
	}
	return loc, true
}
