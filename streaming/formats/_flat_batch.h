/* What the formats' C batch loops share (streaming/formats/_avro_flat.c, _json_flat.c): the
 * loop over a poll batch's messages (read_values) and a model's slot set as pydantic-core sets
 * it. Static functions, included once per extension. */
#ifndef STREAMING_FLAT_BATCH_H
#define STREAMING_FLAT_BATCH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int set_slot(PyObject *descr, PyObject *obj, PyObject *value) {
    descrsetfunc set = Py_TYPE(descr)->tp_descr_set;
    if (set == NULL) {
        PyErr_SetString(PyExc_TypeError, "a slot setter is not a data descriptor");
        return -1;
    }
    return set(descr, obj, value);
}

/* The model pydantic-core builds of the field values in ``dict`` (borrowed), as plan says
 * (streaming.formats.model_checks.builder_plan: the class, the frozenset of the names,
 * object.__new__ and the four slot descriptors at 0 and 3 to 8); NULL with an error set. */
static PyObject *new_model(PyObject *plan, PyObject *dict) {
    PyObject *model = NULL, *set = PySet_New(PyTuple_GET_ITEM(plan, 3));
    if (set == NULL) return NULL;
    model = PyObject_CallOneArg(PyTuple_GET_ITEM(plan, 4), PyTuple_GET_ITEM(plan, 0));
    if (model == NULL || set_slot(PyTuple_GET_ITEM(plan, 5), model, dict) < 0 ||
        set_slot(PyTuple_GET_ITEM(plan, 6), model, set) < 0 ||
        set_slot(PyTuple_GET_ITEM(plan, 7), model, Py_None) < 0 ||
        set_slot(PyTuple_GET_ITEM(plan, 8), model, Py_None) < 0)
        Py_CLEAR(model);
    Py_DECREF(set);
    return model;
}

/* messages[i].value() as bytes, or NULL (no error set) where it is not bytes; -1 on an error
 * that is not an Exception (which the caller must pass on). */
static int message_value(PyObject *msg, PyObject *name, PyObject **out) {
    PyObject *args[1] = {msg};
    PyObject *value =
        PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    *out = NULL;
    if (value == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
        PyErr_Clear();
        return 0;
    }
    if (!PyBytes_CheckExact(value)) {
        Py_DECREF(value);
        return 0;
    }
    *out = value;
    return 0;
}

static int append_index(PyObject *list, Py_ssize_t i) {
    PyObject *n = PyLong_FromSsize_t(i);
    if (n == NULL) return -1;
    int rc = PyList_Append(list, n);
    Py_DECREF(n);
    return rc;
}

/* One value's record: 1 with *record set (a new reference), 0 when the value is left for the
 * caller's loop (no error set), -1 with an error set (the batch stops). */
typedef int (*value_reader)(void *ctx, PyObject *value, PyObject **record);

/* Each message's value() through read: (indexes, records, rest), indexes and rest ascending.
 * A message whose value() raises an Exception or is not bytes is left in rest. */
static PyObject *read_values(PyObject *messages, value_reader read, void *ctx) {
    static PyObject *value_name = NULL;
    if (value_name == NULL && (value_name = PyUnicode_InternFromString("value")) == NULL)
        return NULL;
    PyObject *seq = PySequence_Fast(messages, "read_batch: messages must be a sequence");
    if (seq == NULL) return NULL;
    PyObject *indexes = PyList_New(0), *records = PyList_New(0), *rest = PyList_New(0),
             *result = NULL;
    if (indexes == NULL || records == NULL || rest == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value, *record = NULL;
        if (message_value(PySequence_Fast_GET_ITEM(seq, i), value_name, &value) < 0) goto done;
        if (value != NULL) {
            int rc = read(ctx, value, &record);
            Py_DECREF(value);
            if (rc < 0) goto done;
        }
        if (record != NULL) {
            int rc = PyList_Append(records, record);
            Py_DECREF(record);
            if (rc < 0 || append_index(indexes, i) < 0) goto done;
        } else if (append_index(rest, i) < 0) {
            goto done;
        }
    }
    result = PyTuple_Pack(3, indexes, records, rest);
done:
    Py_DECREF(seq);
    Py_XDECREF(indexes);
    Py_XDECREF(records);
    Py_XDECREF(rest);
    return result;
}

/* A reader's call: 1 with *record, 0 when it raised an Exception (cleared: not certain, the
 * caller's loop says what the value is), -1 for anything else raised. */
static int call_reader(PyObject *reader, PyObject *value, PyObject **record) {
    *record = PyObject_CallOneArg(reader, value);
    if (*record != NULL) return 1;
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyErr_Clear();
    return 0;
}

#endif
