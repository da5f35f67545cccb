// The cvops operator library: the one TORCH_LIBRARY block (each family adds its schemas with
// TORCH_LIBRARY_FRAGMENT in csrc/<family>/<family>.cpp) and the Python module cvops._C, which
// reports how the extension was built and which devices have loops for which ops. Plain CPython
// API: no pybind11 needed for three calls.
#include <Python.h>
#include <torch/library.h>

#include "common/cpu_levels.h"
#include "common/loop_table.h"

TORCH_LIBRARY(cvops, m) {
  // Schemas live with their family; this block only creates the namespace.
}

namespace {

// {"level": the level the CPU kernels run at, "supported": the best this CPU has}.
PyObject* cpu_level(PyObject*, PyObject*) {
  return Py_BuildValue("{s:s,s:s}", "level", cvops::cpu_level_name(cvops::cpu_level()),
                       "supported", cvops::cpu_level_name(cvops::cpu_supported_level()));
}

PyObject* with_cuda(PyObject*, PyObject*) {
#ifdef CVOPS_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

// [{"family": str, "ops": [str], "devices": [str]}]: the loop tables the op bodies dispatch through.
PyObject* loop_tables(PyObject*, PyObject*) {
  const auto& tables = cvops::LoopTableBase::all();
  PyObject* list = PyList_New(0);
  for (const auto* table : tables) {
    PyObject* ops = PyList_New(0);
    for (const auto& op : table->ops()) {
      PyObject* name = PyUnicode_FromString(op.c_str());
      PyList_Append(ops, name);
      Py_DECREF(name);
    }
    PyObject* devices = PyList_New(0);
    for (int d = 0; d < cvops::kLoopDevices; ++d) {
      const auto device = static_cast<cvops::LoopDevice>(d);
      if (!table->has(device)) continue;
      PyObject* name = PyUnicode_FromString(cvops::loop_device_name(device));
      PyList_Append(devices, name);
      Py_DECREF(name);
    }
    PyObject* entry = Py_BuildValue("{s:s,s:N,s:N}", "family", table->family().c_str(), "ops", ops,
                                    "devices", devices);
    PyList_Append(list, entry);
    Py_DECREF(entry);
  }
  return list;
}

PyMethodDef methods[] = {
    {"cpu_level", cpu_level, METH_NOARGS, "The CPU level the kernels run at, and the best supported."},
    {"with_cuda", with_cuda, METH_NOARGS, "True if the CUDA kernels were compiled in."},
    {"loop_tables", loop_tables, METH_NOARGS, "Each family's ops and the devices with loops."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "cvops compiled kernels", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C() { return PyModule_Create(&module); }
