// CAF atoms and message payload types shared by the grid's actors (CAF 0.17 API).
#pragma once

#include <memory>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>

#include "actors/messages.h"

namespace gpugrid::grid {

using bid_atom = caf::atom_constant<caf::atom("bid")>;
using exec_atom = caf::atom_constant<caf::atom("exec")>;
using info_atom = caf::atom_constant<caf::atom("info")>;
using receipt_atom = caf::atom_constant<caf::atom("receipt")>;


}  // namespace gpugrid::grid

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::bid_request_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::bid_reply_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::execute_request_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::execute_result_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::provider_info_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::receipt_ptr)
