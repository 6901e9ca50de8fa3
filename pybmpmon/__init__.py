"""pybmpmon: a BGP Monitoring Protocol (RFC 7854) monitoring station."""

__version__ = "0.1.0"
