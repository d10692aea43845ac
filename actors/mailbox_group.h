// Groups the requests an actor finds waiting in its mailbox: the first one added sends the
// actor a flush message, which queues behind every request already there, so when the flush
// comes up, take() returns them all as one group (a detached recorder writes and syncs each
// group once). Kept in the actor's state; used from the actor only.
#pragma once

#include <utility>
#include <vector>

namespace gpugrid::grid {

template <class Item>
class mailbox_group {
 public:
  template <class Self, class FlushAtom>
  void add(Self* self, Item item, FlushAtom flush) {
    items_.push_back(std::move(item));
    if (!flush_sent_) {
      flush_sent_ = true;
      self->send(self, flush);
    }
  }
  // What was added since the last take (call it on the flush message).
  std::vector<Item> take() {
    flush_sent_ = false;
    std::vector<Item> out = std::move(items_);
    items_.clear();
    return out;
  }

 private:
  std::vector<Item> items_;
  bool flush_sent_ = false;  // a flush is in the mailbox, behind what waits there
};

}  // namespace gpugrid::grid
