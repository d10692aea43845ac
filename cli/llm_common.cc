#include "cli/llm_common.h"

#include "cli/generate_grid.h"

#include <fmt/format.h>

#include "base/json.h"
#include "llm/local_backend.h"

namespace gpugrid::cli {

expected<llm_prompter> llm_prompter::load(const std::string& model_dir) {
  llm_prompter p;
  GG_ASSIGN_OR_RETURN(p.config, llm::load_model_config(model_dir));
  GG_ASSIGN_OR_RETURN(p.tok, llm::tokenizer::load(p.config.tokenizer_path));
  if (!p.config.chat_template.empty()) {
    GG_ASSIGN_OR_RETURN(llm::chat_template t, llm::chat_template::parse(p.config.chat_template,
                                                                        p.config.dir + "/tokenizer_config.json chat_template"));
    p.tmpl = std::move(t);
  }
  return p;
}

expected<std::vector<int32_t>> llm_prompter::prompt_ids(const std::vector<llm::chat_message>& messages, bool raw) const {
  if (raw || !tmpl) {
    std::string text;
    for (size_t i = 0; i < messages.size(); ++i) text += (i ? "\n\n" : "") + messages[i].content;
    return tok.encode(text, true);
  }
  GG_ASSIGN_OR_RETURN(std::string text, tmpl->apply(messages, true, config.bos_token, config.eos_token));
  GG_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok.encode(text, false));
  // A template that does not write the BOS itself gets it here when the tokenizer adds one.
  if (config.add_bos_token && config.bos_token_id >= 0 &&
      (config.bos_token.empty() || text.compare(0, config.bos_token.size(), config.bos_token) != 0))
    ids.insert(ids.begin(), config.bos_token_id);
  return ids;
}

llm::completion_request make_request(const generate_options& o, const llm::model_config& config) {
  llm::completion_request r;
  const llm::generation_defaults& d = config.generation;
  auto& s = r.sampling;
  if (o.temperature >= 0) s.temperature = o.temperature;
  else s.temperature = d.do_sample ? d.temperature : 0.0;
  s.top_k = o.top_k >= 0 ? o.top_k : (d.do_sample ? d.top_k : 0);
  s.top_p = o.top_p >= 0 ? o.top_p : (d.do_sample ? d.top_p : 1.0);
  s.min_p = o.min_p >= 0 ? o.min_p : 0.0;
  s.repetition_penalty = o.repetition_penalty > 0 ? o.repetition_penalty : d.repetition_penalty;
  s.seed = o.seed;
  r.stop.max_new_tokens = o.max_tokens;
  r.stop.stop_strings = o.stop;
  return r;
}

expected<std::unique_ptr<llm::completion_backend>> make_completion_backend(const generate_options& o, std::string* note) {
  note->clear();
  if (!o.local) {  // the grid: --peer providers, or an embedded local grid (cli/generate_grid.h)
    grid_generation_options g;
    g.model_dir = o.model;
    g.peers = o.peers;
    g.data_dir = o.data_dir;
    g.device = o.device;
    g.threads = o.threads;
    g.redundancy = o.redundancy;
    g.max_price_prompt = o.max_price_prompt;
    g.max_price_generated = o.max_price_generated;
    g.timeout_s = o.timeout_s;
    g.stall_timeout_s = o.stall_timeout_s;
    g.spot_check_rate = o.spot_check_rate;
    g.score_locally = o.spot_check_by == "local";
    return make_grid_completion_backend(g, note);
  }
  llm::generator_options go;
  go.threads = o.threads;
  go.device = o.device;
  GG_ASSIGN_OR_RETURN(std::shared_ptr<llm::generator> gen, llm::generator::load(o.model, go));
  return std::unique_ptr<llm::completion_backend>(new llm::local_backend(std::move(gen)));
}

std::string stats_line(const llm::completion_stats& s) {
  return fmt::format("[{} prompt ({} from the cache) + {} generated tokens, {:.1f} tokens/s, first token after {:.0f} ms, {}]",
                     s.prompt_tokens, s.cached_prompt_tokens, s.generated_tokens, s.decode_tokens_per_s,
                     s.time_to_first_token_ms, llm::finish_reason_name(s.reason));
}

}  // namespace gpugrid::cli
