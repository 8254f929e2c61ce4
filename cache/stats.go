package cache

import "sync/atomic"

// Stats counts the cache's decisions; the PoP exports them to Prometheus.
type Stats struct {
	hits, misses, stale            atomic.Int64
	revalidated304, revalidated200 atomic.Int64
	coalesced, stored, rejected    atomic.Int64
	storedBytes, passed            atomic.Int64
	cancelled, fillBudget          atomic.Int64
	sliceFetches                   atomic.Int64
}

// Snapshot is a copy of the counters.
type Snapshot struct {
	Hits, Misses, Stale            int64 // stale: stale responses served (stale-while-revalidate, stale-if-error, max-stale)
	Revalidated304, Revalidated200 int64 // conditional requests answered 304 / with a full response
	Coalesced                      int64 // requests that waited for another's fetch
	Stored, Rejected               int64 // stores accepted / refused by the store's admission
	StoredBytes                    int64 // bytes ever stored
	Evictions                      int64
	Bytes                          int64 // bytes held now
	Passed                         int64 // GETs and HEADs sent past the cache: a request body, a varied field too long to key on
	Cancelled                      int64 // origin fetches cancelled because their client left and nobody else wanted them
	FillBudget                     int64 // storable responses passed through because the fill budget was in use
	SliceFetches                   int64 // slices of objects kept in slices fetched from the origin (Config.SliceBytes)
}

// Stats returns the counters so far.
func (c *Cache) Stats() Snapshot {
	s := &c.stats
	used, evictions := c.st.adm.usage()
	return Snapshot{
		Hits: s.hits.Load(), Misses: s.misses.Load(), Stale: s.stale.Load(),
		Revalidated304: s.revalidated304.Load(), Revalidated200: s.revalidated200.Load(),
		Coalesced: s.coalesced.Load(), Stored: s.stored.Load(), Rejected: s.rejected.Load(),
		StoredBytes: s.storedBytes.Load(),
		Evictions:   evictions,
		Bytes:       used,
		Passed:      s.passed.Load(),
		Cancelled:   s.cancelled.Load(),
		FillBudget:  s.fillBudget.Load(),

		SliceFetches: s.sliceFetches.Load(),
	}
}
