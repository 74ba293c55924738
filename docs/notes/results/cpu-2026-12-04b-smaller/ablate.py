import onnx, sys
m = onnx.load(sys.argv[1]); g = m.graph
ops = sys.argv[3].split(",")
for n in g.node:
    if n.op_type in ops:
        inp = n.input[0]
        del n.input[:]; n.input.append(inp); n.op_type = "Identity"; del n.attribute[:]
onnx.save(m, sys.argv[2], save_as_external_data=True, location=sys.argv[2].split("/")[-1] + ".data")
