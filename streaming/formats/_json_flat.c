/* A poll batch of JSON events read by msgspec into the pipeline's pydantic model, in one call:
 * the loop of streaming.formats.fast_json, whose Python per message would cost as much as the
 * building it saves.
 *
 * read_batch(decode, plan, messages, limit) -> (indexes, records, rest) (the batch last, so
 * that functools.partial binds the rest once):
 *   decode: a msgspec decoder's decode, of a struct whose fields are the model's, checked as
 *           pydantic checks them (streaming.formats.fast_json);
 *   plan:   (cls, names, order, fields_set, new, set_dict, set_fields, set_extra, set_private),
 *           streaming.formats.model_checks.builder_plan (order is not used: the struct's field
 *           names are the model's).
 * A message whose value() is not bytes of at most limit bytes, holds a backslash (an escape:
 * left to pydantic, where two parsers are most likely to differ), or that decode refuses
 * (any Exception) is left in rest for the caller's loop, which validates it with pydantic and
 * so gives the record or the dead letter it always gave. indexes and rest are ascending.
 *
 * No state; the GIL is held throughout (about 2 us a value, 0.65 of it msgspec's).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_flat_batch.h"

/* The model pydantic-core would build of the struct's fields; NULL with an error set. */
static PyObject *build(PyObject *plan, PyObject *parsed) {
    PyObject *names = PyTuple_GET_ITEM(plan, 1), *model = NULL;
    PyObject *dict = PyDict_New();
    if (dict == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *value = PyObject_GetAttr(parsed, name);
        if (value == NULL) goto done;
        int rc = PyDict_SetItem(dict, name, value);
        Py_DECREF(value);
        if (rc < 0) goto done;
    }
    model = new_model(plan, dict);
done:
    Py_DECREF(dict);
    return model;
}

typedef struct {
    Py_ssize_t limit;
    PyObject *decode;
    PyObject *plan;
} Json;

static int read_json(void *ctx, PyObject *value, PyObject **record) {
    Json *j = (Json *)ctx;
    Py_ssize_t size = PyBytes_GET_SIZE(value);
    if (size > j->limit || memchr(PyBytes_AS_STRING(value), '\\', (size_t)size) != NULL)
        return 0;
    PyObject *parsed;
    int rc = call_reader(j->decode, value, &parsed);
    if (rc <= 0) return rc;
    *record = build(j->plan, parsed);
    Py_DECREF(parsed);
    return *record == NULL ? -1 : 1;
}

static PyObject *json_read_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyCallable_Check(args[0]) || !PyTuple_Check(args[1]) ||
        PyTuple_GET_SIZE(args[1]) != 9 || !PyTuple_Check(PyTuple_GET_ITEM(args[1], 1))) {
        PyErr_SetString(PyExc_TypeError,
                        "read_batch(decode, plan: 9-tuple with names, messages, limit: int)");
        return NULL;
    }
    Json json = {PyLong_AsSsize_t(args[3]), args[0], args[1]};
    if (json.limit == -1 && PyErr_Occurred()) return NULL;
    return read_values(args[2], read_json, &json);
}

static PyMethodDef methods[] = {
    {"read_batch", (PyCFunction)(void (*)(void))json_read_batch, METH_FASTCALL,
     "read_batch(decode, plan, messages, limit) -> (indexes, records, rest): the values msgspec "
     "reads, built into the model; the rest are the caller's."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_json_flat",
    "JSON events read by msgspec into a pydantic model, a batch a call "
    "(see streaming.formats.fast_json).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__json_flat(void) { return PyModule_Create(&module_def); }
