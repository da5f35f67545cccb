// The cvops operator library: the one TORCH_LIBRARY block (each family adds its schemas with
// TORCH_LIBRARY_FRAGMENT in csrc/<family>/<family>.cpp) and the Python module cvops._C, which
// reports how the extension was built and which devices have loops for which ops. Plain CPython
// API: no pybind11 needed for four calls.
#include <Python.h>
#include <torch/library.h>

#include "common/cpu_levels.h"
#include "common/loop_table.h"
#include "common/window.h"

TORCH_LIBRARY(cvops, m) {
  // Schemas live with their family; this block only creates the namespace.
}

namespace {

// {"level": the level the CPU kernels run at, "supported": the best this CPU has}.
PyObject* cpu_level(PyObject*, PyObject*) {
  return Py_BuildValue("{s:s,s:s}", "level", cvops::cpu_level_name(cvops::cpu_level()), "supported",
                       cvops::cpu_level_name(cvops::cpu_supported_level()));
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

// window_output_size(op, input_h, input_w, kh, kw, sh, sw, ph, pw, dh, dw) → (out_h, out_w): the
// shared window geometry and its checks (common/window.h), exposed so tests pin them down.
PyObject* window_output_size(PyObject*, PyObject* args) {
  const char* op;
  long long v[10];
  if (!PyArg_ParseTuple(args, "sLLLLLLLLLL", &op, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                        &v[7], &v[8], &v[9])) {
    return nullptr;
  }
  try {
    const cvops::Window2d window{{v[2], v[4], v[6], v[8]}, {v[3], v[5], v[7], v[9]}};
    const auto out = cvops::check_window(op, v[0], v[1], window);
    return Py_BuildValue("(LL)", static_cast<long long>(out.h), static_cast<long long>(out.w));
  } catch (const c10::Error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    return nullptr;
  }
}

PyMethodDef methods[] = {
    {"cpu_level", cpu_level, METH_NOARGS,
     "The CPU level the kernels run at, and the best supported."},
    {"with_cuda", with_cuda, METH_NOARGS, "True if the CUDA kernels were compiled in."},
    {"loop_tables", loop_tables, METH_NOARGS, "Each family's ops and the devices with loops."},
    {"window_output_size", window_output_size, METH_VARARGS,
     "The checked output size of a window."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "cvops compiled kernels", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C() { return PyModule_Create(&module); }
