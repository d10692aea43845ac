#include "base/status.h"

namespace gpugrid {

int exit_code_for(error_kind kind) {
  switch (kind) {
    case error_kind::ok: return 0;
    case error_kind::invalid_input:
    case error_kind::usage:
    case error_kind::not_built:
    case error_kind::unsupported_here: return 2;
    case error_kind::no_provider: return 3;
    case error_kind::verification: return 4;
    case error_kind::io:
    case error_kind::internal: return 1;
  }
  return 1;
}

}  // namespace gpugrid
