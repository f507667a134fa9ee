// esockets._esockets — the CPython binding of the esockets engine (pybind11).
//
// One Engine per esockets.Socket. The Engine is the engine's Handler: every callback runs on an
// engine thread (a shard, a worker, or the server's control thread) and takes the GIL only
// around the Python call. The GIL is released while the engine starts, stops, waits and
// resizes, so callbacks can run meanwhile.
//
// Filenos: Python sees esockets.Fileno objects (an int subclass whose value is the socket's fd)
// that carry the engine's ConnectionId (shard | slot | generation). Every call taking a fileno
// resolves it to that id, so a fileno kept after its connection ended names no one: the
// engine answers `closed` and we raise StaleFileno, even if the fd number now belongs to
// another client. A plain int is looked up in Socket.clients (whoever holds that fd now).
#define PY_SSIZE_T_CLEAN  // "s#" formats take Py_ssize_t
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include "esockets/esockets.hpp"

namespace py = pybind11;
namespace es = esockets;

namespace {

bool python_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

// Engine threads are not Python threads. PyGILState_Ensure on such a thread creates a thread
// state and PyGILState_Release destroys it again when its counter drops to zero, which would
// cost an allocation and a teardown per callback. The first acquisition on an engine thread
// therefore takes one extra reference (the pin), so the thread state lives as long as the
// thread; this thread_local gives it back when the thread ends (engine threads end inside
// stop() or a shard retirement, while the interpreter is alive; if it is already finalizing,
// the thread state was freed with the interpreter and is left alone).
struct ThreadStatePin {
  bool pinned = false;
  ~ThreadStatePin() {
    if (!pinned || !Py_IsInitialized() || python_finalizing()) return;
    (void)PyGILState_Ensure();                // counter 2, holds the GIL
    PyGILState_Release(PyGILState_LOCKED);    // counter 1, keeps the GIL
    PyGILState_Release(PyGILState_UNLOCKED);  // counter 0: thread state deleted, GIL released
  }
};
thread_local ThreadStatePin tls_pin;

// Holds the GIL for a scope, from any thread.
class Gil {
 public:
  Gil() {
    if (!tls_pin.pinned && PyGILState_GetThisThreadState() == nullptr) {
      state_ = PyGILState_Ensure();
      (void)PyGILState_Ensure();  // the pin: never released while the thread lives
      tls_pin.pinned = true;
    } else {
      state_ = PyGILState_Ensure();
    }
  }
  ~Gil() { PyGILState_Release(state_); }
  Gil(const Gil&) = delete;
  Gil& operator=(const Gil&) = delete;

 private:
  PyGILState_STATE state_;
};

// Set by _setup() from esockets/__init__.py.
PyObject* g_fileno_type = nullptr;      // esockets.Fileno
PyObject* g_stale_fileno = nullptr;     // esockets.StaleFileno
PyObject* g_slow_consumer = nullptr;    // esockets.SlowConsumer
PyObject* g_backpressure = nullptr;     // esockets.Backpressure
PyObject* g_format_exception = nullptr; // esockets._format_exception(where, exc) -> str
PyObject* s_id = nullptr;               // interned "_id"
PyObject* s_client = nullptr;           // interned "_client"
PyObject* s_fileno = nullptr;           // interned "_fileno"

[[noreturn]] void raise(PyObject* type, const std::string& msg) {
  PyErr_SetString(type, msg.c_str());
  throw py::error_already_set();
}

// Called with the GIL and a Python error set: clears it and returns a C++ exception carrying
// the Python exception's type, message and traceback, for the engine's handler_exception path
// (it closes the connection and reports the text through on_warning).
std::runtime_error python_error(const char* where) {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (value != nullptr && tb != nullptr) PyException_SetTraceback(value, tb);
  std::string text = std::string(where) + " raised an exception";
  if (g_format_exception != nullptr && value != nullptr) {
    PyObject* w = PyUnicode_FromString(where);
    PyObject* r = w ? PyObject_CallFunctionObjArgs(g_format_exception, w, value, nullptr) : nullptr;
    Py_XDECREF(w);
    if (r != nullptr) {
      Py_ssize_t n = 0;
      const char* s = PyUnicode_AsUTF8AndSize(r, &n);
      if (s != nullptr) text.assign(s, static_cast<std::size_t>(n));
      Py_DECREF(r);
    }
    PyErr_Clear();
  }
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
  return std::runtime_error(text);
}

// Reports an exception raised by a callback that has no connection to close (server-level
// callbacks, on_warning itself): sys.unraisablehook, i.e. printed to stderr by default.
void write_unraisable(const char* where) {
  PyObject* ctx = PyUnicode_FromFormat("esockets callback %s", where);
  PyErr_WriteUnraisable(ctx);
  Py_XDECREF(ctx);
}

// A bytes-like argument (bytes, bytearray, str as UTF-8, any buffer), viewed for one call.
class ByteArg {
 public:
  explicit ByteArg(PyObject* o) {
    if (PyBytes_Check(o)) {
      view_ = std::string_view(PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o)));
    } else if (PyUnicode_Check(o)) {
      Py_ssize_t n = 0;
      const char* s = PyUnicode_AsUTF8AndSize(o, &n);
      if (s == nullptr) throw py::error_already_set();
      view_ = std::string_view(s, static_cast<std::size_t>(n));
    } else if (PyObject_GetBuffer(o, &buf_, PyBUF_SIMPLE) == 0) {
      held_ = true;
      view_ = std::string_view(static_cast<const char*>(buf_.buf), static_cast<std::size_t>(buf_.len));
    } else {
      PyErr_Clear();
      raise(PyExc_TypeError, std::string("message must be bytes, bytearray, memoryview or str, not ") +
                                 Py_TYPE(o)->tp_name);
    }
  }
  ~ByteArg() {
    if (held_) PyBuffer_Release(&buf_);
  }
  ByteArg(const ByteArg&) = delete;
  ByteArg& operator=(const ByteArg&) = delete;
  std::string_view view() const { return view_; }

 private:
  Py_buffer buf_{};
  bool held_ = false;
  std::string_view view_;
};

double as_double(const py::handle& v, const char* name) {
  if (!PyNumber_Check(v.ptr()) || PyBool_Check(v.ptr())) {
    raise(PyExc_TypeError, std::string(name) + " must be a number of seconds");
  }
  double d = PyFloat_AsDouble(v.ptr());
  if (d == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  if (!(d >= 0.0) || d > 1e9) raise(PyExc_ValueError, std::string(name) + " must be >= 0 seconds");
  return d;
}

std::uint64_t as_count(const py::handle& v, const char* name) {
  if (!PyLong_Check(v.ptr()) || PyBool_Check(v.ptr())) {
    raise(PyExc_TypeError, std::string(name) + " must be an int");
  }
  long long x = PyLong_AsLongLong(v.ptr());
  if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (x < 0) raise(PyExc_ValueError, std::string(name) + " must be >= 0, not " + std::to_string(x));
  return static_cast<std::uint64_t>(x);
}

template <class T>
T narrow(std::uint64_t v, const char* name) {
  if (v > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
    raise(PyExc_ValueError, std::string(name) + " is too large: " + std::to_string(v));
  }
  return static_cast<T>(v);
}

std::chrono::milliseconds ms(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0 + 0.5));
}

es::ServerOptions parse_options(const py::dict& d) {
  es::ServerOptions o;
  for (auto item : d) {
    const std::string k = py::str(item.first);
    const py::handle v = item.second;
    const char* n = k.c_str();
    if (k == "host") {
      o.host = py::str(v);
    } else if (k == "port") {
      o.port = narrow<std::uint16_t>(as_count(v, n), n);
    } else if (k == "shards") {
      o.shards = narrow<unsigned>(as_count(v, n), n);
    } else if (k == "workers") {
      o.workers = narrow<unsigned>(as_count(v, n), n);
    } else if (k == "backlog") {
      o.backlog = narrow<int>(as_count(v, n), n);
    } else if (k == "read_chunk") {
      o.read_chunk = as_count(v, n);
    } else if (k == "framing") {
      const std::string f = py::str(v);
      if (f == "raw") {
        o.framing = es::Framing::raw;
      } else if (f == "line") {
        o.framing = es::Framing::line;
      } else if (f == "length_prefixed" || f == "length-prefixed") {
        o.framing = es::Framing::length_prefixed;
      } else {
        raise(PyExc_ValueError, "framing must be 'raw', 'line' or 'length_prefixed', not '" + f + "'");
      }
    } else if (k == "balance") {
      const std::string b = py::str(v);
      if (b == "hash") {
        o.balance = es::Balance::hash;
      } else if (b == "least_loaded" || b == "least-loaded") {
        o.balance = es::Balance::least_loaded;
      } else {
        raise(PyExc_ValueError, "balance must be 'hash' or 'least_loaded', not '" + b + "'");
      }
    } else if (k == "line_delimiter") {
      ByteArg b(v.ptr());
      if (b.view().size() != 1) raise(PyExc_ValueError, "line_delimiter must be exactly one byte");
      o.line_delimiter = b.view()[0];
    } else if (k == "length_prefix_bytes") {
      o.length_prefix_bytes = narrow<unsigned>(as_count(v, n), n);
    } else if (k == "max_frame") {
      o.max_frame = as_count(v, n);
    } else if (k == "max_connections") {
      o.max_connections = as_count(v, n);
    } else if (k == "output_high_watermark") {
      o.output_high_watermark = as_count(v, n);
    } else if (k == "output_low_watermark") {
      o.output_low_watermark = as_count(v, n);
    } else if (k == "output_hard_cap") {
      o.output_hard_cap = as_count(v, n);
    } else if (k == "output_total_cap") {
      o.output_total_cap = as_count(v, n);
    } else if (k == "idle_timeout") {
      o.idle_timeout = ms(as_double(v, n));
    } else if (k == "frame_timeout") {
      o.frame_timeout = ms(as_double(v, n));
    } else if (k == "write_timeout") {
      o.write_timeout = ms(as_double(v, n));
    } else if (k == "shutdown_timeout") {
      o.shutdown_timeout = ms(as_double(v, n));
    } else if (k == "linger_timeout") {
      o.linger_timeout = ms(as_double(v, n));
    } else if (k == "handoff_poll") {
      o.handoff_poll = std::chrono::microseconds(static_cast<std::int64_t>(as_double(v, n) * 1e6 + 0.5));
    } else if (k == "worker_queue_capacity") {
      o.worker_queue_capacity = as_count(v, n);
    } else if (k == "command_queue_capacity") {
      o.command_queue_capacity = as_count(v, n);
    } else if (k == "tcp_nodelay") {
      o.tcp_nodelay = PyObject_IsTrue(v.ptr()) == 1;
    } else if (k == "socket_send_buffer") {
      o.socket_send_buffer = narrow<int>(as_count(v, n), n);
    } else if (k == "socket_receive_buffer") {
      o.socket_receive_buffer = narrow<int>(as_count(v, n), n);
    } else {
      raise(PyExc_TypeError, "unknown engine option '" + k + "'");
    }
  }
  return o;
}

py::dict shard_dict(const es::ShardStats& s) {
  py::dict d;
  d["connections"] = s.connections;
  d["accepts"] = s.accepts;
  d["refused"] = s.refused;
  d["accept_errors"] = s.accept_errors;
  d["bytes_in"] = s.bytes_in;
  d["bytes_out"] = s.bytes_out;
  d["messages_in"] = s.messages_in;
  d["messages_out"] = s.messages_out;
  d["worker_queue_depth"] = s.worker_queue_depth;
  d["paused"] = s.paused;
  d["output_bytes"] = s.output_bytes;
  d["warnings"] = s.warnings;
  d["events_per_sec"] = s.events_per_sec;
  d["busy_ratio"] = s.busy_ratio;
  d["wakeups"] = s.wakeups;
  d["send_backpressure"] = s.send_backpressure;
  d["overflow"] = s.overflow;
  py::dict closes;
  for (std::size_t i = 0; i < es::kCloseReasonCount; ++i) {
    closes[es::to_string(static_cast<es::CloseReason>(i))] = s.closes[i];
  }
  d["closes"] = closes;
  return d;
}

// Owned reference holder that may only be touched with the GIL.
struct Ref {
  PyObject* p = nullptr;
  void set(PyObject* o) {
    Py_XINCREF(o);
    Py_XSETREF(p, o);
  }
  void clear() { Py_CLEAR(p); }
  explicit operator bool() const { return p != nullptr; }
};

class Engine final : public es::Handler {
 public:
  explicit Engine(const py::dict& options) : server_(*this, parse_options(options)) {}

  ~Engine() override {
    if (server_.running()) {
      py::gil_scoped_release nogil;
      server_.stop();
    }
    release_refs();
  }

  // owner: the Socket; clients: its clients dict; callbacks: name -> bound method or None;
  // register_fn(fd, id, peer) -> Fileno; disconnect_fn(fileno, reason, handler_or_None).
  void start(py::handle owner, py::handle clients, const py::dict& callbacks, py::handle register_fn,
             py::handle disconnect_fn, bool auto_register, bool queue_recv, double send_timeout) {
    if (started_) raise(PyExc_RuntimeError, "esockets: start() called twice (a Socket serves once)");
    started_ = true;
    owner_.set(owner.ptr());
    clients_.set(clients.ptr());
    register_.set(register_fn.ptr());
    disconnect_.set(disconnect_fn.ptr());
    auto cb = [&](const char* name, Ref& r) {
      if (callbacks.contains(name)) {
        py::object f = callbacks[name];
        if (!f.is_none()) r.set(f.ptr());
      }
    };
    cb("on_start", on_start_);
    cb("on_client_connect", on_connect_);
    cb("on_message_recv", on_recv_);
    cb("on_client_disconnect", on_disconnect_);
    cb("on_server_shutting_down", on_shutting_down_);
    cb("on_server_shut_down", on_shut_down_);
    cb("on_warning", on_warning_);
    cb("on_framing_error", on_framing_error_);
    cb("on_output_high", on_output_high_);
    cb("on_output_low", on_output_low_);
    has_recv_ = static_cast<bool>(on_recv_) || queue_recv;
    auto_register_ = auto_register;
    queue_recv_ = queue_recv;
    send_timeout_ = std::chrono::milliseconds(static_cast<std::int64_t>(send_timeout * 1000.0));
    in_start_ = true;
    try {
      py::gil_scoped_release nogil;
      server_.start();
    } catch (...) {
      in_start_ = false;
      release_refs();
      throw;
    }
    in_start_ = false;
    if (start_error_ != nullptr || stop_after_start_) {
      {
        py::gil_scoped_release nogil;
        server_.stop();
      }
      release_refs();
      if (start_error_ != nullptr) {
        PyObject* e = start_error_;
        start_error_ = nullptr;
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(e)), e);
        Py_DECREF(e);
        throw py::error_already_set();
      }
    }
  }

  // True if the stop is complete when it returns. From a callback (an engine thread, or
  // on_start) it only requests the stop and returns false: the caller must not wait for the
  // engine's threads, one of which is running it.
  bool stop() {
    if (in_start_) {  // from on_start: the server is not serving yet
      stop_after_start_ = true;
      return false;
    }
    const bool engine_thread = tls_pin.pinned;
    {
      py::gil_scoped_release nogil;
      server_.stop();
    }
    if (engine_thread || server_.running()) return false;
    release_refs();
    return true;
  }

  void request_stop() { server_.request_stop(); }

  void wait() {
    {
      py::gil_scoped_release nogil;
      server_.wait();
    }
    if (!server_.running()) release_refs();
  }

  void send(py::handle fileno, py::handle msg) { send_impl(fileno.ptr(), msg.ptr(), false); }
  void send_frame(py::handle fileno, py::handle msg) { send_impl(fileno.ptr(), msg.ptr(), true); }

  void close(py::handle fileno) {
    const es::ConnectionId id = id_of(fileno.ptr());
    if (server_.close(id) == es::SendStatus::closed) stale(fileno.ptr());
  }

  std::size_t broadcast(py::handle msg) {
    ByteArg b(msg.ptr());
    return server_.broadcast(b.view());
  }

  // auto_register=False: reading resumes with register(), stops with unregister().
  void set_reading(py::handle fileno, bool on) {
    const es::ConnectionId id = id_of(fileno.ptr());
    es::SendStatus st = es::SendStatus::backpressure;
    const auto deadline = std::chrono::steady_clock::now() + send_timeout_;
    for (;;) {
      st = on ? server_.post(id, [](es::Connection& c) { c.resume_reading(); })
              : server_.post(id, [](es::Connection& c) { c.pause_reading(); });
      if (st != es::SendStatus::backpressure) break;
      wait_or_timeout(id, deadline, fileno.ptr());
    }
    if (st == es::SendStatus::closed) stale(fileno.ptr());
  }

  bool connected(py::handle fileno) {
    PyObject* f = fileno.ptr();
    if (PyObject_TypeCheck(f, reinterpret_cast<PyTypeObject*>(g_fileno_type))) {
      return server_.connected(fileno_id(f));
    }
    try {
      return server_.connected(id_of(f));
    } catch (py::error_already_set& e) {
      if (e.matches(PyExc_KeyError)) return false;
      throw;
    }
  }

  std::uint64_t connection_id(py::handle fileno) { return id_of(fileno.ptr()).value(); }

  int port() const { return server_.port(); }
  bool running() const { return server_.running(); }
  std::size_t client_count() const { return server_.client_count(); }
  unsigned shards() const { return server_.shards(); }

  void set_shards(unsigned n) {
    if (tls_pin.pinned) raise(PyExc_RuntimeError, "set_shards() cannot be called from a callback");
    py::gil_scoped_release nogil;
    server_.set_shards(n);
  }
  void rebalance() {
    if (tls_pin.pinned) raise(PyExc_RuntimeError, "rebalance() cannot be called from a callback");
    py::gil_scoped_release nogil;
    server_.rebalance();
  }

  py::dict stats() const {
    es::Stats st;
    {
      py::gil_scoped_release nogil;
      st = server_.stats();
    }
    py::dict d = shard_dict(st.total);
    py::list shards;
    for (const auto& s : st.shards) shards.append(shard_dict(s));
    d["shards"] = shards;
    return d;
  }

  // ---- es::Handler: engine threads --------------------------------------------------------

  void on_start(es::Server& s) override {
    Gil g;
    if (!owner_) return;
    PyObject* port = PyLong_FromLong(s.port());
    if (port == nullptr || PyObject_SetAttrString(owner_.p, "port", port) != 0) {
      PyErr_Clear();
    }
    Py_XDECREF(port);
    if (!on_start_) return;
    PyObject* r = PyObject_CallNoArgs(on_start_.p);
    if (r == nullptr) {
      PyObject *t, *v, *tb;
      PyErr_Fetch(&t, &v, &tb);
      PyErr_NormalizeException(&t, &v, &tb);
      if (v != nullptr && tb != nullptr) PyException_SetTraceback(v, tb);
      Py_XDECREF(t);
      Py_XDECREF(tb);
      Py_XSETREF(start_error_, v);  // start() raises it once the engine is stopped again
      return;
    }
    Py_DECREF(r);
  }

  bool on_client_connect(es::Connection& c) override {
    Gil g;
    if (!register_) return false;
    const std::string peer = c.getip();
    PyObject* fno = PyObject_CallFunction(register_.p, "iKs#", c.fileno(),
                                          static_cast<unsigned long long>(c.id().value()),
                                          peer.data(), static_cast<Py_ssize_t>(peer.size()));
    if (fno == nullptr) throw python_error("esockets: registering the client");
    c.set_user_data(fno);  // owned; given back in on_client_disconnect
    if (!on_connect_) return true;
    PyObject* r = PyObject_CallOneArg(on_connect_.p, fno);
    if (r == nullptr) throw python_error("on_client_connect");
    const bool refuse = r == Py_False;
    Py_DECREF(r);
    return !refuse;
  }

  void on_message_recv(es::Connection& c, es::Bytes m) override {
    if (!auto_register_) c.pause_reading();
    if (!has_recv_) return;
    Gil g;
    auto* fno = static_cast<PyObject*>(c.user_data());
    if (fno == nullptr) return;
    PyObject* b = PyBytes_FromStringAndSize(m.data(), static_cast<Py_ssize_t>(m.size()));
    if (b == nullptr) throw python_error("esockets: copying a message");
    if (queue_recv_) queue_message(fno, b);
    if (on_recv_) {
      PyObject* args[2] = {fno, b};
      PyObject* r = PyObject_Vectorcall(on_recv_.p, args, 2, nullptr);
      Py_DECREF(b);
      if (r == nullptr) throw python_error("on_message_recv");
      Py_DECREF(r);
    } else {
      Py_DECREF(b);
    }
  }

  void on_framing_error(es::Connection& c, std::string_view reason) override {
    if (!on_framing_error_) return;
    Gil g;
    auto* fno = static_cast<PyObject*>(c.user_data());
    if (fno == nullptr) return;
    PyObject* r = PyObject_CallFunction(on_framing_error_.p, "Os#", fno, reason.data(),
                                        static_cast<Py_ssize_t>(reason.size()));
    if (r == nullptr) throw python_error("on_framing_error");
    Py_DECREF(r);
  }

  void on_client_disconnect(es::Connection& c, es::CloseReason reason) override {
    Gil g;
    auto* fno = static_cast<PyObject*>(c.user_data());
    if (fno == nullptr || !disconnect_) return;
    c.set_user_data(nullptr);
    PyObject* r = PyObject_CallFunction(disconnect_.p, "OsO", fno, es::to_string(reason),
                                        on_disconnect_ ? on_disconnect_.p : Py_None);
    Py_DECREF(fno);
    if (r == nullptr) throw python_error("on_client_disconnect");
    Py_DECREF(r);
  }

  void on_output_high(es::Connection& c) override { call_conn(c, on_output_high_, "on_output_high"); }
  void on_output_low(es::Connection& c) override { call_conn(c, on_output_low_, "on_output_low"); }

  void on_server_shutting_down(es::Server&) override { call_server(on_shutting_down_, "on_server_shutting_down"); }
  void on_server_shut_down(es::Server&) override { call_server(on_shut_down_, "on_server_shut_down"); }

  void on_warning(std::string_view message) override {
    Gil g;
    if (!on_warning_) return;
    PyObject* s = PyUnicode_DecodeUTF8(message.data(), static_cast<Py_ssize_t>(message.size()), "replace");
    if (s == nullptr) {
      write_unraisable("on_warning");
      return;
    }
    PyObject* r = PyObject_CallOneArg(on_warning_.p, s);
    Py_DECREF(s);
    if (r == nullptr) {
      write_unraisable("on_warning");
      return;
    }
    Py_DECREF(r);
  }

 private:
  // With the GIL. Drops every reference into Python (callbacks, the owner), breaking the
  // Socket <-> Engine cycle once no callback can run any more.
  void release_refs() {
    for (Ref* r : {&owner_, &clients_, &register_, &disconnect_, &on_start_, &on_connect_, &on_recv_,
                   &on_disconnect_, &on_shutting_down_, &on_shut_down_, &on_warning_,
                   &on_framing_error_, &on_output_high_, &on_output_low_}) {
      r->clear();
    }
  }

  void call_conn(es::Connection& c, Ref& fn, const char* where) {
    if (!fn) return;
    Gil g;
    auto* fno = static_cast<PyObject*>(c.user_data());
    if (fno == nullptr) return;
    PyObject* r = PyObject_CallOneArg(fn.p, fno);
    if (r == nullptr) throw python_error(where);
    Py_DECREF(r);
  }

  void call_server(Ref& fn, const char* where) {
    std::string failure;
    {
      Gil g;
      if (!fn) return;
      PyObject* r = PyObject_CallNoArgs(fn.p);
      if (r != nullptr) {
        Py_DECREF(r);
        return;
      }
      failure = python_error(where).what();
    }
    on_warning("esockets: " + failure);
  }

  void queue_message(PyObject* fno, PyObject* b) {
    PyObject* client = PyObject_GetAttr(fno, s_client);
    PyObject* r = client ? PyObject_CallMethod(client, "_queue_message", "O", b) : nullptr;
    Py_XDECREF(client);
    if (r == nullptr) throw python_error("QUEUE_RECV_MESSAGES");
    Py_DECREF(r);
  }

  static es::ConnectionId fileno_id(PyObject* f) {
    PyObject* v = PyObject_GetAttr(f, s_id);
    if (v == nullptr) throw py::error_already_set();
    const unsigned long long x = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    if (x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
    return es::ConnectionId::from_value(x);
  }

  // With the GIL.
  es::ConnectionId id_of(PyObject* f) {
    if (PyObject_TypeCheck(f, reinterpret_cast<PyTypeObject*>(g_fileno_type))) return fileno_id(f);
    if (!PyLong_Check(f)) {
      raise(PyExc_TypeError, std::string("fileno must be an int (a Fileno), not ") + Py_TYPE(f)->tp_name);
    }
    if (!clients_) raise(g_stale_fileno, "fileno " + py::str(f).cast<std::string>() + ": the server is not running");
    PyObject* client = PyDict_GetItemWithError(clients_.p, f);  // borrowed; plain dict lookup
    if (client == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      raise(g_stale_fileno, "fileno " + py::str(f).cast<std::string>() + " names no connected client");
    }
    PyObject* fno = PyObject_GetAttr(client, s_fileno);
    if (fno == nullptr) throw py::error_already_set();
    es::ConnectionId id{};
    try {
      id = fileno_id(fno);
    } catch (...) {
      Py_DECREF(fno);
      throw;
    }
    Py_DECREF(fno);
    return id;
  }

  [[noreturn]] void stale(PyObject* f) {
    std::string who = "fileno " + py::str(f).cast<std::string>();
    if (PyObject_TypeCheck(f, reinterpret_cast<PyTypeObject*>(g_fileno_type))) {
      PyObject* client = PyObject_GetAttr(f, s_client);
      PyObject* ip = client ? PyObject_CallMethod(client, "getip", nullptr) : nullptr;
      if (ip != nullptr) who += " (" + py::str(ip).cast<std::string>() + ")";
      Py_XDECREF(ip);
      Py_XDECREF(client);
      PyErr_Clear();
    }
    raise(g_stale_fileno, who + " is stale: its connection has ended (the fd number may belong to "
                              "another client now; that client has a new Fileno)");
  }

  void wait_or_timeout(es::ConnectionId id, std::chrono::steady_clock::time_point deadline, PyObject* f) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline || tls_pin.pinned) {
      raise(g_backpressure, "fileno " + py::str(f).cast<std::string>() +
                                ": the engine's command queue stayed full for send_timeout");
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    if (left > std::chrono::milliseconds(100)) left = std::chrono::milliseconds(100);
    {
      py::gil_scoped_release nogil;
      (void)server_.wait_writable(id, left + std::chrono::milliseconds(1));
    }
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }

  void send_impl(PyObject* fileno, PyObject* msg, bool framed) {
    const es::ConnectionId id = id_of(fileno);
    ByteArg b(msg);
    es::SendStatus st = framed ? server_.send_frame(id, b.view()) : server_.send(id, b.view());
    if (st == es::SendStatus::ok) return;
    if (st == es::SendStatus::backpressure) {
      const auto deadline = std::chrono::steady_clock::now() + send_timeout_;
      while (st == es::SendStatus::backpressure) {
        wait_or_timeout(id, deadline, fileno);
        st = framed ? server_.send_frame(id, b.view()) : server_.send(id, b.view());
      }
      if (st == es::SendStatus::ok) return;
    }
    if (st == es::SendStatus::closed) stale(fileno);
    raise(g_slow_consumer, "fileno " + py::str(fileno).cast<std::string>() +
                               ": the send passed the output cap; the connection is being closed "
                               "as a slow consumer");
  }

  es::Server server_;
  Ref owner_, clients_, register_, disconnect_;
  Ref on_start_, on_connect_, on_recv_, on_disconnect_, on_shutting_down_, on_shut_down_, on_warning_,
      on_framing_error_, on_output_high_, on_output_low_;
  bool has_recv_ = false;
  bool auto_register_ = true;
  bool queue_recv_ = false;
  bool started_ = false;
  bool in_start_ = false;
  bool stop_after_start_ = false;
  PyObject* start_error_ = nullptr;
  std::chrono::milliseconds send_timeout_{10000};
};

void setup(py::handle fileno_type, py::handle stale, py::handle slow, py::handle backpressure,
           py::handle format_exception) {
  for (PyObject** slot : {&g_fileno_type, &g_stale_fileno, &g_slow_consumer, &g_backpressure,
                          &g_format_exception}) {
    Py_CLEAR(*slot);
  }
  g_fileno_type = fileno_type.inc_ref().ptr();
  g_stale_fileno = stale.inc_ref().ptr();
  g_slow_consumer = slow.inc_ref().ptr();
  g_backpressure = backpressure.inc_ref().ptr();
  g_format_exception = format_exception.inc_ref().ptr();
  if (!PyType_Check(g_fileno_type)) raise(PyExc_TypeError, "_setup: Fileno must be a type");
}

}  // namespace

PYBIND11_MODULE(_esockets, m) {
  m.doc() = "The esockets engine (C++), bound for esockets.Socket. Use esockets.Socket.";
  s_id = PyUnicode_InternFromString("_id");
  s_client = PyUnicode_InternFromString("_client");
  s_fileno = PyUnicode_InternFromString("_fileno");

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::system_error& e) {
      const int err = e.code().category() == std::generic_category() ||
                              e.code().category() == std::system_category()
                          ? e.code().value()
                          : 0;
      PyObject* args = Py_BuildValue("(is)", err, e.what());
      if (args != nullptr) {
        PyErr_SetObject(PyExc_OSError, args);
        Py_DECREF(args);
      }
    } catch (const std::logic_error& e) {
      if (dynamic_cast<const std::invalid_argument*>(&e) != nullptr) {
        PyErr_SetString(PyExc_ValueError, e.what());
      } else {
        PyErr_SetString(PyExc_RuntimeError, e.what());
      }
    }
  });

  m.def("_setup", &setup);
  py::class_<Engine>(m, "Engine")
      .def(py::init<const py::dict&>())
      .def("start", &Engine::start)
      .def("stop", &Engine::stop)
      .def("request_stop", &Engine::request_stop)
      .def("wait", &Engine::wait)
      .def("send", &Engine::send)
      .def("send_frame", &Engine::send_frame)
      .def("close", &Engine::close)
      .def("broadcast", &Engine::broadcast)
      .def("set_reading", &Engine::set_reading)
      .def("connected", &Engine::connected)
      .def("connection_id", &Engine::connection_id)
      .def("set_shards", &Engine::set_shards)
      .def("rebalance", &Engine::rebalance)
      .def("stats", &Engine::stats)
      .def_property_readonly("port", &Engine::port)
      .def_property_readonly("running", &Engine::running)
      .def_property_readonly("client_count", &Engine::client_count)
      .def_property_readonly("shards", &Engine::shards);
}
