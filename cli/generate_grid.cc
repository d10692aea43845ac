#include "cli/generate_grid.h"

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <mutex>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <fmt/format.h>

#include "actors/generation_client.h"
#include "actors/generation_engine.h"
#include "actors/generation_host.h"
#include "actors/node.h"
#include "actors/receipt_outbox.h"
#include "actors/reputation.h"
#include "cli/chain_payment.h"
#include "cli/grid_setup.h"
#include "cli/log.h"
#include "ledger/ledger.h"
#include "llm/model_config.h"
#include "llm/tokenizer.h"
#include "net/identity.h"

namespace gpugrid::cli {

namespace {

// A provider takes files up to its --max-model-mb (1 GiB by default); the client refuses
// larger ones up front with the file's name.
constexpr int64_t kMaxFileBytes = int64_t{1} << 30;

class grid_backend : public llm::completion_backend {
 public:
  ~grid_backend() override {
    client_.reset();
    if (node_) node_->stop();
    node_.reset();
    host_.reset();
  }

  static expected<std::unique_ptr<grid_backend>> open(const grid_generation_options& o, std::string* note) {
    std::unique_ptr<grid_backend> b(new grid_backend());
    GG_ASSIGN_OR_RETURN(llm::model_config config, llm::load_model_config(o.model_dir));
    GG_ASSIGN_OR_RETURN(llm::tokenizer tok, llm::tokenizer::load(config.tokenizer_path));
    auto shared_tok = std::make_shared<const llm::tokenizer>(std::move(tok));
    int64_t vocab = config.vocab_size > 0 ? config.vocab_size : static_cast<int64_t>(shared_tok->vocab_size());
    GG_ASSIGN_OR_RETURN(grid::folder_manifest manifest, grid::read_folder_manifest(o.model_dir, kMaxFileBytes));

    llm::generator_options go;
    go.threads = o.threads;
    go.device = o.device;
    grid::generation_client_options co;
    co.redundancy = o.redundancy;
    co.max_price_prompt = o.max_price_prompt;
    co.max_price_generated = o.max_price_generated;
    co.first_token_timeout_ms = static_cast<int64_t>(o.timeout_s * 1000);
    co.stall_timeout_ms = static_cast<int64_t>(o.stall_timeout_s * 1000);
    co.spot_check_rate = o.redundancy == 1 ? o.spot_check_rate : 0.0;
    co.note = [](const std::string& s) { log::note("{}", s); };
    b->inbox_ = std::make_shared<grid::generation_inbox>();
    std::function<std::vector<grid::gen_peer>()> peers;
    grid::keypair me;

    if (o.peers.empty()) {
      *note = "no peers configured; generating on an embedded local grid (one in-process provider)";
      me = grid::keypair::generate();
      auto store = std::shared_ptr<grid::folder_store>(grid::folder_store::local_only());
      store->add_local(manifest.hash, o.model_dir);
      grid::generation_host_options ho;  // this machine's own time is free
      b->host_ = std::make_shared<grid::generation_host>(net::identity::generate(), store, grid::generator_loader(go), ho);
      auto host = b->host_;
      auto inbox = b->inbox_;
      grid::key32 client = me.public_key;
      peers = [host, inbox, client] { return std::vector<grid::gen_peer>{grid::in_process_peer(host, inbox, client, 1)}; };
      co.spot_check_rate = 0;  // the provider is this process
    } else {
      GG_ASSIGN_OR_RETURN(std::string dir, grid_data_dir(o.data_dir));
      ::signal(SIGXFSZ, SIG_IGN);
      GG_ASSIGN_OR_RETURN(net::identity id, net::load_or_create_identity(dir));
      me = grid::keypair_of(id);
      GG_ASSIGN_OR_RETURN(grid::reputation_book rep, grid::reputation_book::load(dir));
      b->reputation_ = std::make_unique<grid::reputation_book>(rep);
      std::string recovered;
      GG_ASSIGN_OR_RETURN(b->ledger_, ledger::ledger_file::open(dir, &recovered));
      if (!recovered.empty()) log::warning("{}", recovered);
      GG_ASSIGN_OR_RETURN(b->outbox_, grid::receipt_outbox::open(dir, &me.public_key));
      b->cfg_ = grid_actor_config();
      b->sys_ = std::make_unique<caf::actor_system>(*b->cfg_);
      grid::node_options no;
      no.bootstrap = o.peers;
      no.slow_dials_file = (std::filesystem::path(dir) / "slow-dials.tsv").string();
      no.inbox = b->inbox_;
      GG_ASSIGN_OR_RETURN(b->node_, grid::grid_node::start(*b->sys_, id, no));
      auto failures = b->node_->settle(std::chrono::milliseconds(5000));
      auto found = b->node_->generation_peers();
      if (found.empty()) {
        std::string why = failures.empty() ? "the grid has no providers right now" : fmt::format("{}", fmt::join(failures, "; "));
        return status(error_kind::no_provider, "no provider is reachable: " + why);
      }
      for (const auto& f : failures) log::warning("{}", f);
      *note = fmt::format("{} provider{} reachable", found.size(), found.size() == 1 ? "" : "s");
      grid::grid_node* node = b->node_.get();
      peers = [node] {
        auto found = node->generation_peers();
        if (client_generation_peer_wrapper())
          for (auto& p : found) p = client_generation_peer_wrapper()(std::move(p));
        return found;
      };
      // Paid on a chain when one is configured (GPUGRID_CHAIN_* or DATA_DIR/chain.toml).
      GG_ASSIGN_OR_RETURN(std::shared_ptr<chain_link> link, open_chain_link(dir, {}));
      if (link) {
        GG_ASSIGN_OR_RETURN(chain::secret_key wallet, chain::load_or_create_wallet_key(dir));
        b->payer_ = std::make_unique<chain_payer>(link, wallet, dir);
        co.payer = b->payer_.get();
      }
      co.reputation = b->reputation_.get();
      co.ledger = b->ledger_.get();
      co.outbox = b->outbox_.get();
      co.system = b->sys_.get();
      // Spot checks score on this machine's engine (it has the folder), loaded on first use;
      // with score_locally off another provider that bid scores instead.
      std::string model_dir = o.model_dir;
      // Completions run at once (serve): one scores at a time on the one engine.
      struct local_scorer {
        std::mutex mu;
        std::shared_ptr<grid::gen_engine> engine;
      };
      auto scorer = std::make_shared<local_scorer>();
      if (o.score_locally)
        co.local_score = [scorer, model_dir, go](const std::vector<int32_t>& prompt,
                                                 const std::vector<int32_t>& answer) -> expected<std::vector<float>> {
          std::lock_guard<std::mutex> lk(scorer->mu);
          if (!scorer->engine) {
            GG_ASSIGN_OR_RETURN(std::shared_ptr<grid::gen_engine> e, grid::generator_loader(go)(model_dir));
            scorer->engine = std::move(e);
          }
          return scorer->engine->score(prompt, answer);
        };
    }
    b->client_ = std::make_unique<grid::generation_client>(me, manifest, shared_tok, vocab, b->inbox_, peers, co);
    return b;
  }

  expected<llm::completion_stats> complete(const llm::completion_request& request, const llm::token_sink& sink,
                                           const llm::cancel_check& cancelled) override {
    return client_->complete(request, sink, cancelled);
  }
  bool concurrent() const override { return true; }

 private:
  grid_backend() = default;
  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  std::unique_ptr<grid::reputation_book> reputation_;
  std::unique_ptr<ledger::ledger_file> ledger_;
  std::unique_ptr<grid::receipt_outbox> outbox_;
  std::unique_ptr<chain_payer> payer_;
  std::shared_ptr<grid::generation_inbox> inbox_;
  std::shared_ptr<grid::generation_host> host_;
  std::unique_ptr<grid::grid_node> node_;
  std::unique_ptr<grid::generation_client> client_;
};

}  // namespace

expected<std::unique_ptr<llm::completion_backend>> make_grid_completion_backend(const grid_generation_options& o,
                                                                              std::string* note) {
  GG_ASSIGN_OR_RETURN(std::unique_ptr<grid_backend> b, grid_backend::open(o, note));
  return std::unique_ptr<llm::completion_backend>(std::move(b));
}

generation_peer_wrapper& client_generation_peer_wrapper() {
  static generation_peer_wrapper w;
  return w;
}

generation_loader_wrapper& offer_generation_wrapper() {
  static generation_loader_wrapper w;
  return w;
}

expected<std::shared_ptr<grid::generation_host>> make_offer_generation_host(const net::identity& id,
                                                                           const offer_generation_settings& s) {
  int64_t store_bytes = std::max<int64_t>(int64_t{8} << 30, 4 * s.max_model_bytes);
  GG_ASSIGN_OR_RETURN(std::unique_ptr<grid::folder_store> store,
                      grid::folder_store::open((std::filesystem::path(s.data_dir) / "generation").string(), store_bytes));
  llm::generator_options go;
  go.device = s.device == "auto" ? "cpu" : s.device;
  go.threads = s.threads;
  grid::gen_engine_loader loader = grid::generator_loader(go);
  if (offer_generation_wrapper()) loader = offer_generation_wrapper()(loader);
  grid::generation_host_options ho;
  ho.price_generated = s.price_per_gflop;
  ho.price_prompt = s.price_per_gflop / 10;
  ho.max_memory_bytes = s.max_memory_bytes;
  ho.slots = s.slots;
  ho.payment = s.payment;
  ho.log = [](const std::string& line) { fmt::print(stderr, "gpugrid: offer: {}\n", line); };
  return std::make_shared<grid::generation_host>(id, std::shared_ptr<grid::folder_store>(std::move(store)), loader, ho);
}

}  // namespace gpugrid::cli
