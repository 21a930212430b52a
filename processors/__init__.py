"""Stream processors: plates, faces, sensors, watchlists and alerts."""
