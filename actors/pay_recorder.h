// Records a client's countersigned receipts for many jobs at once, on a thread of its own (a
// detached actor). A job that pays asks it instead of writing on a thread of the job's: the
// receipts waiting in its mailbox when it gets to them form a group, which is added to the
// receipt outbox (one write), then appended to the ledger (one write and fsync per group of
// ledger_file::kMaxGroup, shared with other appenders); every job of the group is answered after
// that sync. A batch of jobs then pays for its durability with one sleep and wake of this thread
// per group, not with one per job (on a virtual disk the sleep and wake around a sync cost more
// than the write itself).
//
// Protocol: (pay_record_atom, pay_record_ptr) -> pay_answer_ptr: ok once the receipt is in the
// outbox (when there is one; a failure there is noted, not fatal, as for a single job) and the
// ledger's sync covered it; the ledger's error otherwise (the receipt is then taken out of the
// outbox again unless the ledger holds that job).
// Thread-safety: the actor may be asked from any number of actors at once.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "base/status.h"
#include "ledger/ledger.h"
#include "ledger/receipt.h"
#include "ledger/voucher_claim.h"

namespace gpugrid::grid {

class receipt_outbox;

using pay_record_atom = caf::atom_constant<caf::atom("payrecord")>;
using pay_flush_atom = caf::atom_constant<caf::atom("payflush")>;
using pay_stop_atom = caf::atom_constant<caf::atom("paystop")>;

struct pay_record {
  ledger::receipt receipt;                     // signed by both sides
  std::optional<ledger::voucher_claim> claim;  // the voucher that paid the job, if any
};
using pay_record_ptr = std::shared_ptr<const pay_record>;
using pay_answer_ptr = std::shared_ptr<const status>;

}  // namespace gpugrid::grid

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::pay_record_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(gpugrid::grid::pay_answer_ptr)

namespace gpugrid::grid {

//   (pay_record_atom, pay_record_ptr) -> pay_answer_ptr   (see above)
//   (pay_flush_atom), (pay_stop_atom)                     its own
using pay_recorder_actor = caf::typed_actor<caf::replies_to<pay_record_atom, pay_record_ptr>::with<pay_answer_ptr>,
                                            caf::reacts_to<pay_flush_atom>, caf::reacts_to<pay_stop_atom>>;

// Records paid receipts where the caller is: adds them to the outbox (when there is one; a
// failure there goes to `note`), then appends them to the ledger (when there is one), and takes
// a receipt the ledger refused out of the outbox again unless the ledger holds that job. One
// result per receipt. What the recorder does for each group, and a job without one in place.
std::vector<status> record_receipts(const std::vector<ledger::ledger_file::append_request>& list,
                                    ledger::ledger_file* ledger, receipt_outbox* outbox,
                                    const std::function<void(const std::string&)>& note);

class pay_recorder {
 public:
  // `ledger` and `outbox` (either may be null) must outlive the recorder; `note` gets what is
  // worth a line on a terminal.
  pay_recorder(caf::actor_system& sys, ledger::ledger_file* ledger, receipt_outbox* outbox,
               std::function<void(const std::string&)> note);
  // Answers what was asked, then stops the thread.
  ~pay_recorder();
  pay_recorder(const pay_recorder&) = delete;
  pay_recorder& operator=(const pay_recorder&) = delete;

  const pay_recorder_actor& actor() const { return actor_; }

 private:
  caf::actor_system& sys_;
  pay_recorder_actor actor_;
};

}  // namespace gpugrid::grid
