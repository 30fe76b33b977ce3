// Built by .ci/cinstall.sh against an installed shmport with CMake
// (find_package(shmport CONFIG), target shmport::shmport_cpp), outside the
// source tree: a channel through the C++ wrapper, one message each way.
#include <cstdio>

#include "shmport.hpp"

int main() {
  auto [a, b] = shmport::Port::channel();
  a.post("from a");
  shmport::Message m;
  if (!b.recv(m, shmport::forever)) return 1;
  if (m.view() != "from a") return 1;
  m = shmport::Message();
  b.post("from b");
  if (!a.recv(m, shmport::forever) || m.size() != 6) return 1;
  std::printf("C++ against shmport %s: ok\n", shmport_version());
  return 0;
}
