// A line-based reader of the PTX NVRTC emits (PTX ISA, "Instruction set" and "Directives"
// chapters): enough of the syntax to list entries and what their launches need. Comments are
// stripped first; braces are counted to find each entry's body.
#include "ptx.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace standin {
namespace {

std::string strip_comment(const std::string& line) {
  auto at = line.find("//");
  return at == std::string::npos ? line : line.substr(0, at);
}

// Bytes of a `.shared [.align N] .bK name[count];` declaration (0 for `.extern` or unsized).
bool shared_decl(const std::string& line, std::string* name, std::uint64_t* bytes) {
  auto at = line.find(".shared");
  if (at == std::string::npos || line.find(".extern") != std::string::npos) return false;
  // Instructions such as `st.shared.u32` carry `.shared` after a mnemonic, not first.
  auto first = line.find_first_not_of(" \t");
  if (first != at) return false;
  std::istringstream in(line.substr(at + 7));
  std::string tok;
  unsigned elem_bits = 0;
  while (in >> tok) {
    if (tok == ".align") {
      in >> tok;
      continue;
    }
    if (tok.size() > 2 && tok[0] == '.' && (tok[1] == 'b' || tok[1] == 'u' || tok[1] == 's' || tok[1] == 'f')) {
      elem_bits = static_cast<unsigned>(std::atoi(tok.c_str() + 2));
      continue;
    }
    break;  // the name, possibly with [count];
  }
  auto bracket = tok.find('[');
  std::uint64_t count = 1;
  if (bracket != std::string::npos) count = std::strtoull(tok.c_str() + bracket + 1, nullptr, 10);
  *name = tok.substr(0, bracket == std::string::npos ? tok.find(';') : bracket);
  *bytes = count * (elem_bits / 8);
  return elem_bits != 0;
}

// `.maxntid x, y, z` or `.reqntid x, y, z` on a line: the product, else 0.
std::uint32_t thread_bound(const std::string& line) {
  for (const char* d : {".maxntid", ".reqntid"}) {
    auto at = line.find(d);
    if (at == std::string::npos) continue;
    std::uint32_t product = 1;
    const char* p = line.c_str() + at + std::strlen(d);
    while (*p) {
      char* end = nullptr;
      unsigned long v = std::strtoul(p, &end, 10);
      if (end == p) {
        ++p;
        continue;
      }
      product *= static_cast<std::uint32_t>(v);
      p = end;
    }
    return product;
  }
  return 0;
}

// Bytes of a kernel parameter declared on `line` (`.param [.align N] .u64 [.ptr …] name` or
// `.param .align 8 .b8 name[24]`), 0 when the type is not recognised.
std::uint32_t param_size(const std::string& line) {
  std::istringstream in(line.substr(line.find(".param") + 6));
  std::string tok;
  std::uint32_t elem = 0;
  while (in >> tok) {
    if (tok == ".align") {
      in >> tok;
      continue;
    }
    if (tok.size() > 2 && tok[0] == '.' && std::strchr("busf", tok[1]) && std::isdigit(static_cast<unsigned char>(tok[2]))) {
      elem = static_cast<std::uint32_t>(std::atoi(tok.c_str() + 2)) / 8;
      continue;
    }
    if (tok[0] == '.') continue;  // .ptr, .global, …
    break;                        // the name
  }
  auto bracket = tok.find('[');
  std::uint32_t count = bracket == std::string::npos ? 1 : static_cast<std::uint32_t>(std::atoi(tok.c_str() + bracket + 1));
  return elem * count;
}

}  // namespace

Module parse_ptx(const char* text) {
  Module m;
  std::istringstream in(text);
  std::string raw;
  std::map<std::string, std::uint64_t> module_shared;  // module-scope `.shared` variables
  std::string current;                                 // the entry being read
  int depth = 0;
  bool in_signature = false;
  std::string body;  // the current entry's body, to find module-scope shared references
  while (std::getline(in, raw)) {
    std::string line = strip_comment(raw);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (depth == 0 && current.empty()) {
      if (line.rfind(".version", 0) == 0) {
        std::sscanf(line.c_str(), ".version %d.%d", &m.isa_major, &m.isa_minor);
        continue;
      }
      if (line.rfind(".target", 0) == 0) {
        std::sscanf(line.c_str(), ".target sm_%d", &m.target_sm);
        continue;
      }
      std::string name;
      std::uint64_t bytes = 0;
      if (shared_decl(line, &name, &bytes)) {
        module_shared[name] = bytes;
        continue;
      }
      auto at = line.find(".entry ");
      if (at != std::string::npos) {
        std::string rest = line.substr(at + 7);
        current = rest.substr(0, rest.find_first_of("( \t"));
        m.entries[current] = Entry{};
        in_signature = true;
        body.clear();
      }
    }
    if (current.empty()) continue;
    Entry& e = m.entries[current];
    if (in_signature) {
      if (line.find(".param") != std::string::npos) {
        ++e.params;
        e.param_bytes.push_back(param_size(line));
      }
      if (std::uint32_t b = thread_bound(line)) e.max_threads = b;
      if (line.find('{') == std::string::npos) continue;
      in_signature = false;
    }
    for (char c : line) depth += (c == '{') - (c == '}');
    std::string name;
    std::uint64_t bytes = 0;
    if (shared_decl(line, &name, &bytes)) e.static_shared += bytes;
    body += line;
    body += '\n';
    if (depth == 0) {
      for (const auto& [var, size] : module_shared)
        if (body.find(var) != std::string::npos) e.static_shared += size;
      current.clear();
    }
  }
  if (m.isa_major == 0) m.error = "no .version directive: not a PTX text";
  else if (m.target_sm == 0) m.error = "no .target sm_XY directive";
  else if (m.entries.empty()) m.error = "no .entry in the module";
  return m;
}

}  // namespace standin
