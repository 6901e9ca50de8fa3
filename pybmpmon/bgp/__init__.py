"""BGP (RFC 4271 and extensions): messages, attributes, NLRI and OPEN capabilities."""
