"""BMP (RFC 7854): framing, per-peer header and the seven message types."""
