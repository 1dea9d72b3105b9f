//! Report building from a store filled directly (no network): DST, empty periods, ordering.
