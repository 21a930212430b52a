"""The control-room console: camera wall, live feed, sensors and watchlists in the browser (``citystream console``)."""
