"""Build script for the optional C accelerator; the metadata lives in setup.cfg.

``pybmpmon._fastpath`` decodes the common BGP UPDATE several times faster than
the pure Python decoder (see pybmpmon/bgp/message.py).  It is optional: when it
cannot be compiled (no C compiler or Python headers) the install still succeeds
and pybmpmon runs the Python decoder, which gives the same results.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("pybmpmon._fastpath", ["pybmpmon/_fastpath.c"], optional=True)])
