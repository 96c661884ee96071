"""HTTP server: the A1111-compatible API, our queue API, auth, limits and error mapping."""
