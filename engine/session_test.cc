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
