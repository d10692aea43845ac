// Small models built in code for the grid's tests. Header-only; tests only.
#pragma once

#include <onnx/onnx_pb.h>

#include <string>

namespace gpugrid::grid::testing {

// y = Relu(x + b), x: float32 [n, 3]
inline std::string add_relu_model() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("g");
  auto* b = g->add_initializer();
  b->set_name("b");
  b->set_data_type(onnx::TensorProto::FLOAT);
  b->add_dims(3);
  for (float v : {0.5f, -1.0f, 2.0f}) b->add_float_data(v);
  auto* n1 = g->add_node();
  n1->set_op_type("Add");
  n1->add_input("x");
  n1->add_input("b");
  n1->add_output("s");
  auto* n2 = g->add_node();
  n2->set_op_type("Relu");
  n2->add_input("s");
  n2->add_output("y");
  for (auto* vi : {g->add_input(), g->add_output()}) {
    vi->set_name(vi == &g->input(0) ? "x" : "y");
    auto* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("n");
    tt->mutable_shape()->add_dim()->set_dim_value(3);
  }
  return m.SerializeAsString();
}

}  // namespace gpugrid::grid::testing
