#include "engine/fusion.h"

namespace gpugrid {

status fuse_operators(graph& g) {
  (void)g;
  return status::ok();
}

}  // namespace gpugrid
