package geodns

import (
	"errors"
	"net/netip"
)

// cityDB is a MaxMind-format city database.
type cityDB struct{}

// openCityDB is not built yet: configs that name a database are refused
// with this error rather than silently answering without it.
func openCityDB(path string) (*cityDB, error) {
	return nil, errors.New(path + ": MaxMind databases are not supported by this build yet; use locator.networks")
}

func (db *cityDB) lookup(netip.Addr) (location, bool) { return location{}, false }
