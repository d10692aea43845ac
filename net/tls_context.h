// Server TLS context setup shared by the WebSocket transport's wss:// and `serve`'s https://:
// TLS 1.2 or newer, a PEM certificate chain and its private key, checked to belong together.
#pragma once

#include <string>

#include <boost/asio/ssl/context.hpp>

#include "base/status.h"

namespace gpugrid::net {

// Loads `cert_file` and `key_file` into `ctx` (a tls_server context). Fails with invalid_input
// naming the file (and the flag, --tls-cert / --tls-key) that cannot be used.
status configure_server_tls(boost::asio::ssl::context& ctx, const std::string& cert_file, const std::string& key_file);

}  // namespace gpugrid::net
