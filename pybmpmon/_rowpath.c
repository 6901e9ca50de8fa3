/*
 * pybmpmon._rowpath: optional C accelerator for the store's batch builder.
 *
 * Implements the inner loop of pybmpmon/store/rows.py BatchBuilder._route_set
 * for the routes nearly all of a table consists of: unicast, no labels, no
 * path identifier.  Each such route becomes one line of the stage table's
 * COPY text and bumps its generation in the segment's dictionary, exactly as
 * the Python loop does.
 *
 * Strategy: the Python code is the reference.  This loop stops at the first
 * route it does not handle (another shape, non-ASCII text, a key that would
 * reach the segment's generation limit) and tells the caller where, so the
 * caller runs its own code for that route and calls again.  It never fails
 * on input; an exception means memory ran out.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Bumped whenever route_lines changes its arguments or result, so that
   pybmpmon.store.rows ignores a stale build instead of calling it wrongly. */
#define API_VERSION 1

/* The prefix of a simple route (an Nlri tuple: prefix, path_id, rd, labels,
   evpn), or NULL when the Python loop must take it. */
static PyObject *
simple_prefix(PyObject *nlri)
{
    PyObject *prefix, *path_id, *labels;

    if (!PyTuple_Check(nlri) || PyTuple_GET_SIZE(nlri) < 4)
        return NULL;
    prefix = PyTuple_GET_ITEM(nlri, 0);
    path_id = PyTuple_GET_ITEM(nlri, 1);
    labels = PyTuple_GET_ITEM(nlri, 3);
    if (!PyUnicode_CheckExact(prefix) || !PyUnicode_IS_ASCII(prefix))
        return NULL;
    /* rows.py: "nlri.path_id or 0" is 0, "not nlri.labels" holds. */
    if (path_id != Py_None) {
        int overflow;
        if (!PyLong_CheckExact(path_id) || PyLong_AsLongAndOverflow(path_id, &overflow) != 0
            || overflow)
            return NULL;
    }
    if (!PyTuple_CheckExact(labels) || PyTuple_GET_SIZE(labels) != 0)
        return NULL;
    return prefix;
}

/* route_lines(lines, gens, nlris, start, pre, tail, max_gen) -> (stop, top) */
static PyObject *
route_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *lines, *gens, *nlris, *pre, *tail;
    PyObject **items;
    Py_ssize_t i, n, start, max_gen, top = 0, pre_len, tail_len;
    const char *pre_text, *tail_text;

    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "route_lines(lines, gens, nlris, start, pre, tail, max_gen) takes 7 arguments");
        return NULL;
    }
    lines = args[0];
    gens = args[1];
    nlris = args[2];
    pre = args[4];
    tail = args[5];
    start = PyLong_AsSsize_t(args[3]);
    max_gen = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(lines) || !PyDict_CheckExact(gens)
        || !(PyTuple_CheckExact(nlris) || PyList_CheckExact(nlris))
        || !PyUnicode_CheckExact(pre) || !PyUnicode_IS_ASCII(pre)
        || !PyUnicode_CheckExact(tail) || !PyUnicode_IS_ASCII(tail) || start < 0) {
        /* Nothing for this loop: the caller's own loop takes the routes. */
        return Py_BuildValue("(nn)", start, top);
    }
    n = PySequence_Fast_GET_SIZE(nlris);
    items = PySequence_Fast_ITEMS(nlris);
    pre_text = (const char *)PyUnicode_DATA(pre);
    pre_len = PyUnicode_GET_LENGTH(pre);
    tail_text = (const char *)PyUnicode_DATA(tail);
    tail_len = PyUnicode_GET_LENGTH(tail);

    for (i = start; i < n; i++) {
        PyObject *prefix = simple_prefix(items[i]);
        PyObject *found, *gen_obj, *line;
        Py_ssize_t gen, prefix_len;
        char digits[24];
        int digits_len;
        char *p;

        if (prefix == NULL)
            break;
        found = PyDict_GetItemWithError(gens, prefix);
        if (found == NULL) {
            if (PyErr_Occurred())
                return NULL;
            gen = 0;
        }
        else {
            if (!PyLong_CheckExact(found))
                break;
            gen = PyLong_AsSsize_t(found);
            if (gen == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                break;
            }
            gen += 1;
            if (gen >= max_gen)
                break;  /* the caller closes the segment */
        }
        /* gen \t(pre) prefix \t prefix (tail) */
        digits_len = snprintf(digits, sizeof digits, "%zd", gen);
        prefix_len = PyUnicode_GET_LENGTH(prefix);
        line = PyUnicode_New(digits_len + pre_len + 2 * prefix_len + 1 + tail_len, 127);
        if (line == NULL)
            return NULL;
        p = (char *)PyUnicode_DATA(line);
        memcpy(p, digits, digits_len);
        p += digits_len;
        memcpy(p, pre_text, pre_len);
        p += pre_len;
        memcpy(p, PyUnicode_DATA(prefix), prefix_len);
        p += prefix_len;
        *p++ = '\t';
        memcpy(p, PyUnicode_DATA(prefix), prefix_len);
        p += prefix_len;
        memcpy(p, tail_text, tail_len);
        gen_obj = PyLong_FromSsize_t(gen);
        if (gen_obj == NULL || PyDict_SetItem(gens, prefix, gen_obj) < 0
            || PyList_Append(lines, line) < 0) {
            Py_XDECREF(gen_obj);
            Py_DECREF(line);
            return NULL;
        }
        Py_DECREF(gen_obj);
        Py_DECREF(line);
        if (gen > top)
            top = gen;
    }
    return Py_BuildValue("(nn)", i, top);
}

static PyMethodDef methods[] = {
    {"route_lines", (PyCFunction)(void (*)(void))route_lines, METH_FASTCALL,
     "route_lines(lines, gens, nlris, start, pre, tail, max_gen) -> (stop, top): append the"
     " stage lines of nlris[start:stop], simple unicast routes, and set their generations in"
     " gens; top is the highest generation given.  nlris[stop] (if any) is for the caller."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pybmpmon._rowpath",
    .m_doc = "C accelerator for the batch builder's route lines; pybmpmon.store.rows is the"
             " reference.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__rowpath(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && PyModule_AddIntConstant(module, "API_VERSION", API_VERSION) < 0)
        Py_CLEAR(module);
    return module;
}
