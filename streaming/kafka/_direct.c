/* Records produced straight through a confluent-kafka Producer's librdkafka handle, with the
 * GIL released, for records that need no delivery report of their own (streaming.kafka.direct
 * says when that holds and why it is worth it).
 *
 * bind(path, producer_type)
 *     takes librdkafka's functions from the copy already loaded at ``path`` (RTLD_NOLOAD: the
 *     one confluent-kafka's cimpl links, never a second copy) and the Producer type whose
 *     instances produce_all accepts. OSError when the library is not loaded there or lacks a
 *     function.
 * produce_all(producer, topic, partition, keys, values, wait) -> (sent, err)
 *     produces values[i] with keys[i] (bytes; a value may be None: a tombstone) to
 *     ``topic``/``partition``, in order, with no per-record opaque: confluent-kafka's delivery
 *     callback then returns at once, without the GIL. The GIL is released while librdkafka
 *     queues the records. On a full queue ``wait()`` is called (with the GIL) and the record
 *     is tried again. Stops at the first other error: ``sent`` records went, ``err`` is
 *     librdkafka's error code (0: all went).
 *
 * The producer's rd_kafka_t is the first field after PyObject_HEAD of confluent-kafka's Handle
 * (its layout since 2016); it is trusted only when librdkafka's own opaque of that handle is
 * the producer object itself (cimpl sets it so: its callbacks find their Handle by it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>

#define RD_KAFKA_MSG_F_COPY 0x2
#define RD_KAFKA_RESP_ERR__QUEUE_FULL (-184)

typedef struct {
    PyObject_HEAD
    void *rk;
} HandleHead;

static void *(*topic_new)(void *rk, const char *topic, void *conf);
static void (*topic_destroy)(void *rkt);
static int (*produce)(void *rkt, int32_t partition, int msgflags, void *payload, size_t len,
                      const void *key, size_t keylen, void *msg_opaque);
static int (*last_error)(void);
static void *(*opaque_of)(const void *rk);
static PyTypeObject *producer_type;

static PyObject *py_bind(PyObject *self, PyObject *args) {
    const char *path;
    PyObject *type;
    void *lib;
    if (!PyArg_ParseTuple(args, "sO!", &path, &PyType_Type, &type)) return NULL;
    lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) return PyErr_Format(PyExc_OSError, "librdkafka not loaded from %s", path);
    topic_new = dlsym(lib, "rd_kafka_topic_new");
    topic_destroy = dlsym(lib, "rd_kafka_topic_destroy");
    produce = dlsym(lib, "rd_kafka_produce");
    last_error = dlsym(lib, "rd_kafka_last_error");
    opaque_of = dlsym(lib, "rd_kafka_opaque");
    if (!topic_new || !topic_destroy || !produce || !last_error || !opaque_of) {
        topic_new = NULL;
        return PyErr_Format(PyExc_OSError, "%s lacks a function produce_all needs", path);
    }
    Py_XDECREF(producer_type);
    Py_INCREF(type);
    producer_type = (PyTypeObject *)type;
    Py_RETURN_NONE;
}

/* The producer's rd_kafka_t, or NULL with TypeError set. */
static void *handle_of(PyObject *producer) {
    void *rk;
    if (topic_new == NULL || producer_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind() first");
        return NULL;
    }
    if (Py_TYPE(producer) != producer_type) {
        PyErr_SetString(PyExc_TypeError, "not the confluent-kafka Producer bind() was given");
        return NULL;
    }
    rk = ((HandleHead *)producer)->rk;
    if (rk == NULL || opaque_of(rk) != (void *)producer) {
        PyErr_SetString(PyExc_TypeError, "a closed producer, or one laid out otherwise");
        return NULL;
    }
    return rk;
}

static PyObject *py_handle_ok(PyObject *self, PyObject *producer) {
    if (handle_of(producer) == NULL) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *py_produce_all(PyObject *self, PyObject *args) {
    PyObject *producer, *keys, *values, *wait, **items = NULL, *result = NULL;
    const char *topic;
    int partition, err = 0;
    Py_ssize_t n, i, sent = 0;
    void *rk, *rkt;
    if (!PyArg_ParseTuple(args, "OsiO!O!O", &producer, &topic, &partition, &PyList_Type, &keys,
                          &PyList_Type, &values, &wait))
        return NULL;
    if ((rk = handle_of(producer)) == NULL) return NULL;
    n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "one value per key");
        return NULL;
    }
    /* the items are held here: the lists may change once the GIL is released */
    items = PyMem_Malloc(sizeof(PyObject *) * (2 * n + 1));
    if (items == NULL) return PyErr_NoMemory();
    for (i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i), *v = PyList_GET_ITEM(values, i);
        if (!PyBytes_Check(k) || (v != Py_None && !PyBytes_Check(v))) {
            PyErr_SetString(PyExc_TypeError, "keys are bytes, values bytes or None");
            n = i;
            goto exit;
        }
        Py_INCREF(k);
        Py_INCREF(v);
        items[2 * i] = k;
        items[2 * i + 1] = v;
    }
    Py_BEGIN_ALLOW_THREADS
    rkt = topic_new(rk, topic, NULL);
    Py_END_ALLOW_THREADS
    if (rkt == NULL) {
        err = last_error();
        goto done;
    }
    while (sent < n) {
        Py_BEGIN_ALLOW_THREADS
        for (; sent < n; sent++) {
            PyObject *k = items[2 * sent], *v = items[2 * sent + 1];
            int none = v == Py_None;
            if (produce(rkt, partition, RD_KAFKA_MSG_F_COPY, none ? NULL : PyBytes_AS_STRING(v),
                        none ? 0 : (size_t)PyBytes_GET_SIZE(v), PyBytes_AS_STRING(k),
                        (size_t)PyBytes_GET_SIZE(k), NULL) == -1) {
                err = last_error();
                break;
            }
        }
        Py_END_ALLOW_THREADS
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            PyObject *w = PyObject_CallNoArgs(wait);
            if (w == NULL) break;
            Py_DECREF(w);
            err = 0;
        } else if (err)
            break;
    }
    Py_BEGIN_ALLOW_THREADS
    topic_destroy(rkt);
    Py_END_ALLOW_THREADS
done:
    if (!PyErr_Occurred()) result = Py_BuildValue("(ni)", sent, err);
exit:
    for (i = 0; i < 2 * n; i++) Py_DECREF(items[i]);
    PyMem_Free(items);
    return result;
}

static PyMethodDef methods[] = {
    {"bind", py_bind, METH_VARARGS, "librdkafka's functions from the loaded copy at a path."},
    {"handle_ok", py_handle_ok, METH_O, "True when produce_all can use this producer."},
    {"produce_all", py_produce_all, METH_VARARGS, "Records produced, GIL released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_direct", NULL, -1, methods};

PyMODINIT_FUNC PyInit__direct(void) { return PyModule_Create(&module); }
