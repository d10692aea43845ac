#include "chain/keccak.h"

#include <crypto++/keccak.h>

namespace gpugrid::chain {

hash32 keccak256(const uint8_t* p, size_t n) {
  CryptoPP::Keccak_256 k;
  k.Update(p, n);
  hash32 out{};
  k.Final(out.data());
  return out;
}

}  // namespace gpugrid::chain
