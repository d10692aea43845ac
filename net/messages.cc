#include "net/messages.h"

namespace gpugrid::net {

const char* to_string(goodbye_reason r) {
  switch (r) {
    case goodbye_reason::normal: return "closing";
    case goodbye_reason::version_mismatch: return "protocol version mismatch";
    case goodbye_reason::protocol_error: return "protocol error";
    case goodbye_reason::shutting_down: return "shutting down";
    case goodbye_reason::overloaded: return "overloaded";
    case goodbye_reason::auth_failed: return "authentication failed";
    case goodbye_reason::timeout: return "timeout";
  }
  return "unknown";
}

const char* to_string(job_error_code c) {
  switch (c) {
    case job_error_code::internal: return "internal error";
    case job_error_code::bad_input: return "bad input";
    case job_error_code::unsupported: return "unsupported model";
    case job_error_code::model_missing: return "model missing";
    case job_error_code::model_too_big: return "model too big";
    case job_error_code::timeout: return "timeout";
    case job_error_code::busy: return "busy";
    case job_error_code::cancelled: return "cancelled";
    case job_error_code::draining: return "shutting down";
    case job_error_code::not_awarded: return "not awarded";
  }
  return "unknown";
}

const char* message_name(size_t variant_index) {
  static const char* const names[] = {"Hello",      "HelloAck",   "Goodbye",  "PeerExchange", "Ping",
                                      "Pong",       "BidRequest", "Bid",      "BidDecline",   "Award",
                                      "Cancel",     "ModelPut",   "ModelChunk", "ModelNeed",  "Execute",
                                      "Result",     "JobError",   "Receipt",  "ReceiptAck",   "GenOpen",
                                      "GenBid",     "GenPrompt",  "GenTokens",
                                      "DialBack", "DialBackResult", "RelayAttach", "RelayAttachAck",
                                      "RelayIncoming", "NodeStatus",
                                      "DhtQuery",   "DhtReply",  "GenPay"};
  static_assert(sizeof(names) / sizeof(names[0]) == std::variant_size_v<message>, "one name per message");
  return variant_index < std::variant_size_v<message> ? names[variant_index] : "unknown";
}

const char* message_name(const message& m) { return message_name(m.index()); }

}  // namespace gpugrid::net
