#include "net/tls_context.h"

namespace gpugrid::net {

status configure_server_tls(boost::asio::ssl::context& ctx, const std::string& cert, const std::string& key) {
  namespace ssl = boost::asio::ssl;
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  boost::system::error_code ec;
  ctx.use_certificate_chain_file(cert, ec);
  if (ec) return invalid_input("--tls-cert '{}': cannot load a PEM certificate: {}", cert, ec.message());
  ctx.use_private_key_file(key, ssl::context::pem, ec);
  if (ec) return invalid_input("--tls-key '{}': cannot load a PEM private key: {}", key, ec.message());
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
    return invalid_input("--tls-key '{}' does not belong to the certificate in '{}'", key, cert);
  return status::ok();
}

}  // namespace gpugrid::net
