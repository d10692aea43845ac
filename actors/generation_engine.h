// The grid's generation engine: llm::generator behind the gen_engine interface that providers
// (actors/generation_host.h) and spot checks use.
#pragma once

#include <memory>
#include <string>

#include "actors/generation_host.h"
#include "llm/generator.h"

namespace gpugrid::grid {

// Wraps a loaded generator. kv_bytes_per_token comes from the model's config (layers x KV
// heads x head size x 2 (K and V) x 4 bytes), measured from a one-token batch when the config
// does not say.
std::shared_ptr<gen_engine> wrap_generator(std::shared_ptr<llm::generator> g);

// Loads folders with llm::generator::load on `device` with `threads` engine threads.
gen_engine_loader generator_loader(llm::generator_options options);

}  // namespace gpugrid::grid
