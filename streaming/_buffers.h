/* The one way the C extensions take an array argument: a C-contiguous buffer of one element
 * type, or a TypeError that names the argument and the type expected. Included by
 * streaming/engine/_encode.c, streaming/explain/_relu_ig.c and streaming/explain/_top_codes.c
 * (setup.py puts this folder on their include path).
 *
 * kind: 'd' float64, 'q' int64 (numpy's int64 says "l" on LP64 platforms, also taken), 'b'
 * int8. The caller releases the buffer (PyBuffer_Release) once it has taken it.
 */
#ifndef STREAMING_BUFFERS_H
#define STREAMING_BUFFERS_H

#include <Python.h> /* after PY_SSIZE_T_CLEAN, which each including file defines first */

static int take_buffer(PyObject *obj, Py_buffer *view, char kind, int writable,
                       const char *name) {
    if (PyObject_GetBuffer(obj, view,
                           PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = view->format;
    Py_ssize_t size = kind == 'b' ? 1 : 8;
    int fits = f != NULL && view->itemsize == size && f[0] != '\0' && f[1] == '\0' &&
               (f[0] == kind || (kind == 'q' && f[0] == 'l'));
    if (!fits) {
        PyErr_Format(PyExc_TypeError, "%s: a C-contiguous %s buffer expected", name,
                     kind == 'd' ? "float64" : kind == 'q' ? "int64" : "int8");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

#endif
