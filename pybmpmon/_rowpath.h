/*
 * What the source files of pybmpmon._rowpath share: _rowpath.c (the module,
 * route lines, attribute text), _rowevents.c (whole Route Monitoring events)
 * and _digest.c (the attribute sets' BLAKE2b digest).
 */
#ifndef PYBMPMON_ROWPATH_H
#define PYBMPMON_ROWPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* The prefix of a simple unicast route (an Nlri without path id or labels,
   ASCII prefix text; borrowed), or NULL when the Python loop must take it. */
PyObject *rp_simple_prefix(PyObject *nlri);

/* The lines of the simple routes items[start:n], appended to `lines`, their
   generations set in `gens` (rows.BatchBuilder._route_set's loop); *top is
   raised to the highest generation given.  Returns where it stopped: n, or a
   route that is not simple or whose key would reach max_gen; -1 on error.
   pre and tail: ASCII str. */
Py_ssize_t rp_emit_routes(PyObject *lines, PyObject *gens, PyObject *const *items,
                          Py_ssize_t n, Py_ssize_t start, PyObject *pre, PyObject *tail,
                          Py_ssize_t max_gen, Py_ssize_t *top);

/* _digest.c: BLAKE2b, 8-octet digest, personalized, as a big-endian signed
   number; rows.attribute_digest of a wire set (NULL without an exception:
   the Python code must do it). */
int64_t rp_blake2b_64(const uint8_t *const *parts, const size_t *sizes, int count,
                      const uint8_t person[16]);
PyObject *rp_wire_digest(PyObject *next_hop, PyObject *wire);
PyObject *rp_wire_digest_function(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* The decimal text of u into buf (20 octets at least); its length. */
static inline int
rp_format_u64(char *buf, uint64_t u)
{
    char digits[20];
    int n = 0, len = 0;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        buf[len++] = digits[--n];
    return len;
}

/* The decimal text of v into buf (21 octets at least); its length. */
static inline int
rp_format_i64(char *buf, int64_t v)
{
    if (v >= 0)
        return rp_format_u64(buf, (uint64_t)v);
    buf[0] = '-';
    return 1 + rp_format_u64(buf + 1, 0 - (uint64_t)v);
}

/* Where the field `name` is in the NamedTuple class `cls`, or -1 with a
   ValueError naming `who` (the configure function asking). */
Py_ssize_t rp_field_index(PyObject *cls, const char *name, const char *who);

/* Module functions of _rowevents.c. */
PyObject *rp_route_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *rp_configure_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
int rp_events_init(void);

#endif
