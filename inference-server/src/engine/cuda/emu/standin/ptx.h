// What the standin reads from a PTX module image: what the driver's JIT would check before any
// kernel runs (PTX ISA version and target), and per entry what a launch is checked against
// (parameter count, static shared memory, `.maxntid`/`.reqntid` from __launch_bounds__).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace standin {

// One `.entry` of a module.
struct Entry {
  int params = 0;                   // number of `.param` in the signature
  std::vector<std::uint32_t> param_bytes;  // size of each, in order (what a launch copies)
  std::uint64_t static_shared = 0;  // bytes of `.shared` it declares or references
  std::uint32_t max_threads = 0;    // product of `.maxntid`/`.reqntid`; 0 when not given
};

// A parsed module, or why it was refused.
struct Module {
  int isa_major = 0, isa_minor = 0;  // `.version`
  int target_sm = 0;                 // `.target sm_XY` as XY
  std::map<std::string, Entry> entries;
  std::string error;  // non-empty: the image is not PTX this parser understands
};

// Parses a NUL-terminated PTX text.
Module parse_ptx(const char* text);

}  // namespace standin
