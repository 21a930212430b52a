"""Event contracts, the topic map and ClickHouse migrations: the shapes every stage shares."""
