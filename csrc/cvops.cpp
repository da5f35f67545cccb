// The cvops operator library: the one TORCH_LIBRARY block (each family adds its schemas with
// TORCH_LIBRARY_FRAGMENT in csrc/<family>/<family>.cpp) and the Python module cvops._C, which
// only reports how the extension was built. Plain CPython API: no pybind11 needed for two calls.
#include <Python.h>
#include <torch/library.h>

#include "common/cpu_features.h"

TORCH_LIBRARY(cvops, m) {
  // Schemas live with their family; this block only creates the namespace.
}

namespace {

PyObject* cpu_features(PyObject*, PyObject*) {
  return Py_BuildValue("{s:O,s:O}", "avx2", cvops::cpu_has_avx2() ? Py_True : Py_False,
                       "avx512", cvops::cpu_has_avx512() ? Py_True : Py_False);
}

PyObject* with_cuda(PyObject*, PyObject*) {
#ifdef CVOPS_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cpu_features", cpu_features, METH_NOARGS, "CPU features the run-time dispatch can use."},
    {"with_cuda", with_cuda, METH_NOARGS, "True if the CUDA kernels were compiled in."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "cvops compiled kernels", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C() { return PyModule_Create(&module); }
