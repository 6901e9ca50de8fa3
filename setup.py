"""Build script for the optional C accelerators; the metadata lives in setup.cfg.

``pybmpmon._fastpath`` decodes the common BGP UPDATE several times faster than
the pure Python decoder (see pybmpmon/bgp/message.py); ``pybmpmon._rowpath``
writes the stage lines of plain unicast routes for the batch builder (see
pybmpmon/store/rows.py).  Both are optional: when they cannot be compiled (no C
compiler or Python headers) the install still succeeds and pybmpmon runs the
Python code, which gives the same results.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("pybmpmon._fastpath", ["pybmpmon/_fastpath.c"], optional=True),
    Extension("pybmpmon._rowpath",
              ["pybmpmon/_rowpath.c", "pybmpmon/_rowevents.c", "pybmpmon/_digest.c"],
              depends=["pybmpmon/_rowpath.h"], optional=True),
])
