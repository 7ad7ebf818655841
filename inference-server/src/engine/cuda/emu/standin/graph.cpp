// Streams, stream capture and CUDA graphs (CUDA Driver API reference: "Stream Management",
// "Graph Management"; CUDA Programming Guide, "CUDA Graphs" > "Creating a Graph Using Stream
// Capture"). The standin runs work when it is issued, so a stream is a queue only while it
// captures: launches, GEMMs and device-to-device copies issued to a capturing stream are recorded
// (arguments copied by value, as the driver does) instead of run, and cuGraphLaunch runs the
// recorded work in order. Events (for the profiler) take the host's clock when recorded.
//
// What the driver refuses during a capture, the standin refuses too, and it invalidates the
// capture so that cuStreamEndCapture fails as it would on a GPU: capturing the legacy stream,
// synchronising a capturing stream, copying to or from pageable host memory on it, cuMemAlloc in
// the global capture mode. It is stricter in one place, on purpose: any synchronous call (copy,
// cuCtxSynchronize, cuMemFree) while a stream captures is refused, because in this backend it
// means work escaped the graph.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "standin.h"

using CUresult = int;
using CUdeviceptr = unsigned long long;

using namespace standin::result;

namespace {

// CUstreamCaptureMode.
enum : int { MODE_GLOBAL = 0, MODE_THREAD_LOCAL = 1, MODE_RELAXED = 2 };

}  // namespace

struct CUstream_st {
  unsigned flags = 0;
  bool capturing = false;
  int mode = MODE_GLOBAL;
  std::string invalid;  // non-empty: why the capture in progress can no longer make a graph
  std::vector<standin::Work> nodes;
};
struct CUgraph_st {
  std::vector<standin::Work> nodes;
};
struct CUgraphExec_st {
  std::vector<standin::Work> nodes;
};
using CUstream = CUstream_st*;
using CUgraph = CUgraph_st*;
using CUgraphExec = CUgraphExec_st*;

namespace {

struct Streams {
  std::mutex mu;
  std::set<CUstream> live;
  std::set<CUgraph> graphs;
  std::set<CUgraphExec> execs;
};

Streams& streams() {
  static Streams s;
  return s;
}

// Whether `s` is the legacy stream or one cuStreamCreate made and nobody destroyed.
bool known(CUstream s) {
  if (s == nullptr) return true;
  std::lock_guard<std::mutex> lock(streams().mu);
  return streams().live.count(s) != 0;
}

}  // namespace

namespace standin {

int issue(void* stream, const char* call, Work work) {
  auto* s = static_cast<CUstream>(stream);
  if (!known(s)) {
    complain("%s on a stream that was never created or was destroyed", call);
    return INVALID_HANDLE;
  }
  {
    std::lock_guard<std::mutex> lock(streams().mu);
    if (s != nullptr && s->capturing) {
      s->nodes.push_back(std::move(work));
      return SUCCESS;
    }
  }
  // The legacy stream synchronises with every other: issuing to it while one captures is the
  // implicit dependency the driver refuses.
  if (s == nullptr)
    if (int r = refuse_while_capturing(call)) return r;
  return work();
}

int refuse_while_capturing(const char* call) {
  std::lock_guard<std::mutex> lock(streams().mu);
  int refused = SUCCESS;
  for (CUstream s : streams().live) {
    if (!s->capturing) continue;
    if (s->invalid.empty()) s->invalid = call;
    refused = STREAM_CAPTURE_UNSUPPORTED;
  }
  if (refused) complain("%s while a stream is capturing: the capture is invalidated", call);
  return refused;
}

bool alloc_allowed_now() {
  std::lock_guard<std::mutex> lock(streams().mu);
  for (CUstream s : streams().live) {
    if (s->capturing && s->mode != MODE_RELAXED) {
      if (s->invalid.empty()) s->invalid = "cuMemAlloc";
      return false;
    }
  }
  return true;
}

int capture_refuses(void* stream, const char* call) {
  auto* s = static_cast<CUstream>(stream);
  if (!known(s)) {
    complain("%s on a stream that was never created or was destroyed", call);
    return INVALID_HANDLE;
  }
  std::lock_guard<std::mutex> lock(streams().mu);
  if (s == nullptr || !s->capturing) return SUCCESS;
  if (s->invalid.empty()) s->invalid = call;
  complain("%s on a capturing stream: not capturable, the capture is invalidated", call);
  return STREAM_CAPTURE_UNSUPPORTED;
}

}  // namespace standin

extern "C" {

CUresult cuStreamCreate(CUstream* stream, unsigned flags) {
  if (stream == nullptr || flags > 1) return INVALID_VALUE;  // CU_STREAM_DEFAULT, CU_STREAM_NON_BLOCKING
  auto* s = new CUstream_st;
  s->flags = flags;
  std::lock_guard<std::mutex> lock(streams().mu);
  streams().live.insert(s);
  *stream = s;
  return SUCCESS;
}

CUresult cuStreamDestroy_v2(CUstream stream) {
  std::lock_guard<std::mutex> lock(streams().mu);
  if (stream == nullptr || !streams().live.erase(stream)) return INVALID_HANDLE;
  delete stream;
  return SUCCESS;
}

// Work runs when issued, so a stream is always idle outside a capture.
CUresult cuStreamSynchronize(CUstream stream) { return standin::capture_refuses(stream, "cuStreamSynchronize"); }

CUresult cuStreamBeginCapture_v2(CUstream stream, int mode) {
  if (mode != MODE_GLOBAL && mode != MODE_THREAD_LOCAL && mode != MODE_RELAXED) return INVALID_VALUE;
  if (stream == nullptr) {
    standin::complain("cuStreamBeginCapture on the legacy default stream, which cannot be captured");
    return STREAM_CAPTURE_UNSUPPORTED;
  }
  if (!known(stream)) return INVALID_HANDLE;
  // SDSERVE_STANDIN_GRAPHS=0: a driver that cannot capture, so the caller's fallback runs.
  if (const char* v = std::getenv("SDSERVE_STANDIN_GRAPHS"); v && std::strcmp(v, "0") == 0) return NOT_SUPPORTED;
  std::lock_guard<std::mutex> lock(streams().mu);
  if (stream->capturing) return ILLEGAL_STATE;
  stream->capturing = true;
  stream->mode = mode;
  stream->invalid.clear();
  stream->nodes.clear();
  return SUCCESS;
}

CUresult cuStreamEndCapture(CUstream stream, CUgraph* graph) {
  if (graph == nullptr) return INVALID_VALUE;
  *graph = nullptr;
  if (stream == nullptr || !known(stream)) return INVALID_HANDLE;
  std::lock_guard<std::mutex> lock(streams().mu);
  if (!stream->capturing) return ILLEGAL_STATE;
  stream->capturing = false;
  std::vector<standin::Work> nodes;
  nodes.swap(stream->nodes);
  if (!stream->invalid.empty()) {
    standin::complain("cuStreamEndCapture: the capture was invalidated by %s", stream->invalid.c_str());
    return STREAM_CAPTURE_INVALIDATED;
  }
  *graph = new CUgraph_st{std::move(nodes)};
  streams().graphs.insert(*graph);
  return SUCCESS;
}

CUresult cuStreamIsCapturing(CUstream stream, int* status) {
  if (status == nullptr) return INVALID_VALUE;
  if (!known(stream)) return INVALID_HANDLE;
  std::lock_guard<std::mutex> lock(streams().mu);
  // CU_STREAM_CAPTURE_STATUS_NONE, _ACTIVE, _INVALIDATED
  *status = stream == nullptr || !stream->capturing ? 0 : (stream->invalid.empty() ? 1 : 2);
  return SUCCESS;
}

CUresult cuGraphInstantiateWithFlags(CUgraphExec* exec, CUgraph graph, unsigned long long flags) {
  if (exec == nullptr || flags != 0) return INVALID_VALUE;
  std::lock_guard<std::mutex> lock(streams().mu);
  if (!streams().graphs.count(graph)) return INVALID_HANDLE;
  *exec = new CUgraphExec_st{graph->nodes};
  streams().execs.insert(*exec);
  return SUCCESS;
}

CUresult cuGraphLaunch(CUgraphExec exec, CUstream stream) {
  std::vector<standin::Work>* nodes = nullptr;
  {
    std::lock_guard<std::mutex> lock(streams().mu);
    if (!streams().execs.count(exec)) return INVALID_HANDLE;
    nodes = &exec->nodes;
  }
  // A graph launched into a capturing stream would become a child graph: not modelled.
  if (int r = standin::capture_refuses(stream, "cuGraphLaunch")) return r;
  for (standin::Work& node : *nodes)
    if (int r = node()) return r;
  return SUCCESS;
}

CUresult cuGraphExecDestroy(CUgraphExec exec) {
  std::lock_guard<std::mutex> lock(streams().mu);
  if (!streams().execs.erase(exec)) return INVALID_HANDLE;
  delete exec;
  return SUCCESS;
}

CUresult cuGraphDestroy(CUgraph graph) {
  std::lock_guard<std::mutex> lock(streams().mu);
  if (!streams().graphs.erase(graph)) return INVALID_HANDLE;
  delete graph;
  return SUCCESS;
}

}  // extern "C"

// Events: work runs when issued, so an event recorded on an idle stream completes at once and
// its time is the host's clock then.
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
  bool recorded = false;
};

extern "C" {

CUresult cuEventCreate(CUevent_st** event, unsigned flags) {
  if (event == nullptr || flags > 0xf) return INVALID_VALUE;
  *event = new CUevent_st;
  return SUCCESS;
}

CUresult cuEventDestroy_v2(CUevent_st* event) {
  if (event == nullptr) return INVALID_HANDLE;
  delete event;
  return SUCCESS;
}

CUresult cuEventRecord(CUevent_st* event, CUstream stream) {
  if (event == nullptr) return INVALID_HANDLE;
  // An event node in a graph is not modelled.
  if (int r = standin::capture_refuses(stream, "cuEventRecord")) return r;
  event->at = std::chrono::steady_clock::now();
  event->recorded = true;
  return SUCCESS;
}

CUresult cuEventSynchronize(CUevent_st* event) { return event == nullptr ? INVALID_HANDLE : SUCCESS; }

CUresult cuEventElapsedTime(float* ms, CUevent_st* start, CUevent_st* end) {
  if (ms == nullptr) return INVALID_VALUE;
  if (start == nullptr || end == nullptr) return INVALID_HANDLE;
  if (!start->recorded || !end->recorded) return NOT_READY;
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return SUCCESS;
}

}  // extern "C"
