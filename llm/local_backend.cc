#include "llm/local_backend.h"

namespace gpugrid::llm {

expected<completion_stats> local_backend::complete(const completion_request& request, const token_sink& sink,
                                                   const cancel_check& cancelled) {
  return gen_->complete(request, sink, cancelled);
}

}  // namespace gpugrid::llm
