# libFuzzer target for the wire frame decoder (net/codec.h decode()); included from
# tests/fuzz/CMakeLists.txt, so GPUGRID_FUZZ_COMPILE_FLAGS and gpugrid_fuzz_target exist.
# The decoder's sources are compiled into the target itself so they are instrumented
# whatever flags the rest of the tree was built with.
gpugrid_fuzz_target(fuzz_frame ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_frame.cc
  gpugrid_base gpugrid_schema_headers ${SODIUM_LIBRARY} OpenSSL::Crypto)
target_sources(fuzz_frame PRIVATE
  ${CMAKE_SOURCE_DIR}/net/codec.cc
  ${CMAKE_SOURCE_DIR}/net/identity.cc
  ${CMAKE_SOURCE_DIR}/net/hash.cc
  ${CMAKE_SOURCE_DIR}/net/messages.cc
  ${CMAKE_SOURCE_DIR}/ledger/voucher_claim.cc
  ${CMAKE_SOURCE_DIR}/discovery/record.cc
  ${CMAKE_SOURCE_DIR}/discovery/routing_table.cc
  ${CMAKE_SOURCE_DIR}/discovery/dht.cc)
