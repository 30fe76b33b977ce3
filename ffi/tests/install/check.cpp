// Built by .ci/cinstall.sh against an installed shmport with CMake
// (find_package(shmport CONFIG), target shmport::shmport_cpp), outside the
// source tree: a channel through the C++ wrapper, one message each way.
#include <cstdio>
#include <cstring>

#include "shmport.hpp"

int main() {
  // The header compiled against is the library run with.
  char header[32];
  std::snprintf(header, sizeof header, "%d.%d.%d", SHMPORT_VERSION_MAJOR, SHMPORT_VERSION_MINOR,
                SHMPORT_VERSION_PATCH);
  if (std::strcmp(header, shmport_version()) != 0) return 1;
  auto [a, b] = shmport::Port::channel();
  a.post("from a");
  shmport::Message m;
  if (!b.try_recv(m, shmport::forever)) return 1;
  if (m.view() != "from a") return 1;
  m = shmport::Message();
  b.post("from b");
  if (!a.try_recv(m, shmport::forever) || m.size() != 6) return 1;
  std::printf("C++ against shmport %s: ok\n", shmport_version());
  return 0;
}
