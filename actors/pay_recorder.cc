#include "actors/pay_recorder.h"

#include <exception>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "actors/mailbox_group.h"
#include "actors/receipt_outbox.h"

namespace gpugrid::grid {

std::vector<status> record_receipts(const std::vector<ledger::ledger_file::append_request>& list,
                                    ledger::ledger_file* ledger, receipt_outbox* outbox,
                                    const std::function<void(const std::string&)>& note) {
  std::vector<status> out(list.size(), status::ok());
  // The outbox first: its checkpoints rely on that order (see actors/receipt_outbox.h). A lone
  // receipt goes through add(), which shares a write with other threads adding at once.
  if (outbox && !list.empty()) {
    std::vector<const ledger::receipt*> rs;
    rs.reserve(list.size());
    for (const auto& a : list) rs.push_back(a.r);
    status st = rs.size() == 1 ? outbox->add(*rs[0]) : outbox->add_all(rs);
    if (!st.is_ok()) note("cannot keep the receipt for redelivery: " + st.message());
  }
  if (!ledger) return out;
  auto heads = ledger->append_verified_all(list);
  for (size_t i = 0; i < list.size(); ++i) {
    if (i < heads.size() && heads[i]) continue;
    const ledger::receipt& r = *list[i].r;
    out[i] = i < heads.size() ? heads[i].error() : internal_error("the ledger gave no answer for a receipt");
    if (outbox && !ledger->contains(r.job_id, r.provider_key)) (void)outbox->remove(r.job_id, r.provider_key);
  }
  return out;
}

namespace {

struct asked {
  pay_record_ptr record;
  caf::typed_response_promise<pay_answer_ptr> answer;
};

struct recorder_state {
  mailbox_group<asked> asked_since_flush;
};

using recorder_self = pay_recorder_actor::stateful_pointer<recorder_state>;

// Records what was asked since the last flush and answers it.
void flush(recorder_self self, ledger::ledger_file* ledger, receipt_outbox* outbox,
           const std::function<void(const std::string&)>& note) {
  std::vector<asked> group = self->state.asked_since_flush.take();
  if (group.empty()) return;
  std::vector<status> results;
  try {
    std::vector<ledger::ledger_file::append_request> list;
    list.reserve(group.size());
    for (const auto& a : group) list.push_back({&a.record->receipt, a.record->claim ? &*a.record->claim : nullptr});
    results = record_receipts(list, ledger, outbox, note);
  } catch (const std::exception& e) {
    results.assign(group.size(), internal_error("recording the receipts failed: {}", e.what()));
  }
  for (size_t i = 0; i < group.size(); ++i) group[i].answer.deliver(pay_answer_ptr(std::make_shared<const status>(results[i])));
}

pay_recorder_actor::behavior_type recorder_actor(recorder_self self, ledger::ledger_file* ledger, receipt_outbox* outbox,
                                                 std::function<void(const std::string&)> note) {
  return {
      [self](pay_record_atom, const pay_record_ptr& r) -> caf::result<pay_answer_ptr> {
        if (!r) return pay_answer_ptr(std::make_shared<const status>(internal_error("an empty receipt to record")));
        auto rp = self->make_response_promise<pay_answer_ptr>();
        self->state.asked_since_flush.add(self, asked{r, rp}, pay_flush_atom::value);
        return rp;
      },
      [self, ledger, outbox, note](pay_flush_atom) { flush(self, ledger, outbox, note); },
      [self, ledger, outbox, note](pay_stop_atom) {
        flush(self, ledger, outbox, note);  // what was asked before the stop is answered
        self->quit();
      },
  };
}

}  // namespace

pay_recorder::pay_recorder(caf::actor_system& sys, ledger::ledger_file* ledger, receipt_outbox* outbox,
                           std::function<void(const std::string&)> note)
    : sys_(sys) {
  if (!note) note = [](const std::string&) {};
  actor_ = sys.spawn<caf::detached>(recorder_actor, ledger, outbox, std::move(note));
}

pay_recorder::~pay_recorder() {
  // Whatever was asked before the stop is recorded and answered first.
  caf::scoped_actor self{sys_};
  self->monitor(actor_);
  self->send(actor_, pay_stop_atom::value);
  self->receive([](caf::down_msg&) {});
}

}  // namespace gpugrid::grid
