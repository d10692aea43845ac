#include "engine/session.h"

#include <catch2/catch.hpp>

#include <onnx/onnx_pb.h>

#include "engine/onnx_loader.h"

using namespace gpugrid;

namespace {

// x (float, dims as given: a number or a symbol) -> Relu -> y.
std::string relu_model(const std::vector<std::string>& dims) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  auto* n = g->add_node();
  n->set_op_type("Relu");
  n->add_input("x");
  n->add_output("y");
  auto* in = g->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (const auto& d : dims) {
    auto* dim = tt->mutable_shape()->add_dim();
    if (!d.empty() && std::isdigit(static_cast<unsigned char>(d[0]))) dim->set_dim_value(std::stoll(d));
    else dim->set_dim_param(d);
  }
  auto* out = g->add_output();
  out->set_name("y");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return m.SerializeAsString();
}

}  // namespace

TEST_CASE("session: dims sharing a symbolic name may differ (names are hints)", "[session]") {
  // One exporter names every unknown dim "?"; a 48x192 image must still run.
  auto g = load_model_from_bytes(relu_model({"?", "3", "?", "?"}));
  REQUIRE(g);
  auto s = session::create(*g, session_options{1});
  REQUIRE(s);
  tensor x = tensor::zeros(dtype::f32, {1, 3, 48, 192});
  x.data<float>()[5] = -2;
  x.data<float>()[7] = 3;
  auto r = (*s)->run({x});
  INFO((r ? std::string() : r.error().message()));
  REQUIRE(r);
  REQUIRE((*r)[0].shape() == shape_t{1, 3, 48, 192});
  CHECK((*r)[0].data<float>()[5] == 0);
  CHECK((*r)[0].data<float>()[7] == 3);
  // Numeric dims are still checked.
  auto bad = (*s)->run({tensor::zeros(dtype::f32, {1, 4, 48, 192})});
  REQUIRE(!bad);
  CHECK_THAT(bad.error().message(), Catch::Contains("[?, 3, ?, ?]"));
}

TEST_CASE("session: overwrite_inputs lets a kernel reuse an input only the inputs vector holds", "[session]") {
  auto g = load_model_from_bytes(relu_model({"4"}));
  REQUIRE(g);
  session_options o{1};
  o.memory_plan = false;
  o.overwrite_inputs = true;
  auto s = session::create(*g, o);
  REQUIRE(s);
  auto make = [] {
    tensor x = tensor::zeros(dtype::f32, {4});
    x.data<float>()[0] = -1;
    x.data<float>()[1] = 2;
    return x;
  };
  {  // Handed over: Relu writes into the input's bytes.
    std::vector<tensor> in{make()};
    const void* bytes = in[0].raw();
    auto r = (*s)->run(in);
    REQUIRE(r);
    CHECK((*r)[0].raw() == bytes);
    CHECK((*r)[0].data<float>()[0] == 0);
    CHECK((*r)[0].data<float>()[1] == 2);
  }
  {  // Also held by the caller: left as it was.
    tensor x = make();
    auto r = (*s)->run({x});
    REQUIRE(r);
    CHECK((*r)[0].raw() != x.raw());
    CHECK(x.data<float>()[0] == -1);
    CHECK((*r)[0].data<float>()[0] == 0);
  }
  {  // Without the option an input is never overwritten.
    session_options plain{1};
    plain.memory_plan = false;
    auto p = session::create(*g, plain);
    REQUIRE(p);
    std::vector<tensor> in{make()};
    const void* bytes = in[0].raw();
    auto r = (*p)->run(in);
    REQUIRE(r);
    CHECK((*r)[0].raw() != bytes);
    CHECK(in[0].data<float>()[0] == -1);
  }
}

namespace {

// Concatenations the memory plan may do in place, and ones it must not: x [1, 4, 8, 8] ->
//   c1 = Concat(Relu(x), Neg(x), axis 1)          both inputs read only there
//   c2 = Concat(c1, Abs(x), axis 1)                nested: c1 itself lives in c2
//   c3 = Concat(Exp(x), Sigmoid(x), axis 2)        slices not contiguous (4 channels before)
//   c4 = Concat(e, Sqrt(Abs(x)), axis 1), e = Exp(x) read by c4 and by Floor: not in place
//   y1 = Transpose(c2), y3 = Transpose(c4) (kernels that cannot write in place, so c2 and c4
//   stay in the arena), y2 = c3, y4 = Floor(e)
std::string concat_model() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* g = m.mutable_graph();
  auto node = [&](const std::string& op, std::vector<std::string> ins, const std::string& out, int64_t axis = -1) {
    auto* n = g->add_node();
    n->set_op_type(op);
    for (const auto& i : ins) n->add_input(i);
    n->add_output(out);
    if (axis >= 0) {
      auto* a = n->add_attribute();
      a->set_name("axis");
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(axis);
    }
  };
  node("Relu", {"x"}, "r");
  node("Neg", {"x"}, "n");
  node("Concat", {"r", "n"}, "c1", 1);
  node("Abs", {"x"}, "a");
  node("Concat", {"c1", "a"}, "c2", 1);
  node("Transpose", {"c2"}, "y1");
  node("Exp", {"x"}, "e3");
  node("Sigmoid", {"x"}, "s3");
  node("Concat", {"e3", "s3"}, "y2", 2);
  node("Exp", {"x"}, "e");
  node("Abs", {"x"}, "a4");
  node("Sqrt", {"a4"}, "q");
  node("Concat", {"e", "q"}, "c4", 1);
  node("Transpose", {"c4"}, "y3");
  node("Floor", {"e"}, "y4");
  auto* in = g->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : {1, 4, 8, 8}) tt->mutable_shape()->add_dim()->set_dim_value(d);
  for (const char* name : {"y1", "y2", "y3", "y4"}) {
    auto* out = g->add_output();
    out->set_name(name);
    out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  }
  return m.SerializeAsString();
}

}  // namespace

TEST_CASE("session: the memory plan's in-place concatenations give the same results run after run", "[session]") {
  auto g = load_model_from_bytes(concat_model());
  REQUIRE(g);
  session_options planned{2};
  session_options plain{2};
  plain.memory_plan = false;
  auto s = session::create(*g, planned);
  auto ref = session::create(*g, plain);
  REQUIRE(s);
  REQUIRE(ref);
  for (int round = 0; round < 4; ++round) {
    tensor x = tensor::zeros(dtype::f32, {1, 4, 8, 8});
    for (int64_t i = 0; i < 256; ++i) x.data<float>()[i] = static_cast<float>((i * 37 + round * 11) % 23) / 4.f - 2.5f;
    auto got = (*s)->run({x});
    auto want = (*ref)->run({x});
    REQUIRE(got);
    REQUIRE(want);
    REQUIRE(got->size() == 4);
    for (size_t o = 0; o < 4; ++o) {
      INFO("round " << round << " output " << o);
      REQUIRE((*got)[o].shape() == (*want)[o].shape());
      for (int64_t i = 0; i < (*want)[o].numel(); ++i) REQUIRE((*got)[o].data<float>()[i] == (*want)[o].data<float>()[i]);
    }
  }
  // The first run made the plan; the later ones ran on it.
  run_stats st;
  tensor x = tensor::zeros(dtype::f32, {1, 4, 8, 8});
  REQUIRE((*s)->run({x}, &st));
  CHECK(st.planned);
}
