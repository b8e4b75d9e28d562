//! Deriving an embedding output from an inner tensor of a model, at load time, with no
//! Python step: the pooled feature map a trainable head learns on.
//!
//! An ONNX file is a serialised `ModelProto`, and protobuf merges a message that appears twice:
//! repeated fields are concatenated. So appending a small `ModelProto` fragment, whose `graph`
//! holds two new nodes and one new output, to the file's bytes gives the same graph plus a
//! pooled output; nothing else of the model changes (its other outputs stay bit for bit).
//!
//! The pool is `GlobalAveragePool` then `Flatten(axis = 1)`: `[N, C, H, W] -> [N, C]`. Both ops
//! have the same signature in every opset, unlike `ReduceMean`, whose `axes` moved from an
//! attribute to an input in opset 18.

/// Field numbers of the ONNX protobuf messages used here (onnx/onnx.proto3).
mod field {
    pub const MODEL_GRAPH: u32 = 7;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_NAME: u32 = 3;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTRIBUTE_NAME: u32 = 1;
    pub const ATTRIBUTE_I: u32 = 3;
    pub const ATTRIBUTE_TYPE: u32 = 20;
    pub const VALUE_INFO_NAME: u32 = 1;
    pub const VALUE_INFO_TYPE: u32 = 2;
    pub const TYPE_TENSOR: u32 = 1;
    pub const TENSOR_ELEM_TYPE: u32 = 1;
}

/// `AttributeProto.AttributeType.INT`.
const ATTRIBUTE_TYPE_INT: u64 = 2;
/// `TensorProto.DataType.FLOAT`.
const ELEM_TYPE_FLOAT: u64 = 1;

/// The bytes to append to an ONNX model so that it gains output `output`: the global average
/// pool of the `[N, C, H, W]` tensor `from`, flattened to `[N, C]`. Loading fails (in ONNX
/// Runtime, with its message) if the graph has no tensor `from` or it is not 4-D.
pub fn pooled_output_fragment(from: &str, output: &str) -> Vec<u8> {
    let pooled = format!("{output}/pooled");
    let pool = node(
        &format!("{output}/GlobalAveragePool"),
        "GlobalAveragePool",
        from,
        &pooled,
        None,
    );
    let flatten = node(
        &format!("{output}/Flatten"),
        "Flatten",
        &pooled,
        output,
        Some(("axis", 1)),
    );
    let mut tensor_type = Vec::new();
    put_varint_field(&mut tensor_type, field::TENSOR_ELEM_TYPE, ELEM_TYPE_FLOAT);
    let mut type_proto = Vec::new();
    put_bytes_field(&mut type_proto, field::TYPE_TENSOR, &tensor_type);
    let mut value_info = Vec::new();
    put_bytes_field(&mut value_info, field::VALUE_INFO_NAME, output.as_bytes());
    put_bytes_field(&mut value_info, field::VALUE_INFO_TYPE, &type_proto);

    let mut graph = Vec::new();
    put_bytes_field(&mut graph, field::GRAPH_NODE, &pool);
    put_bytes_field(&mut graph, field::GRAPH_NODE, &flatten);
    put_bytes_field(&mut graph, field::GRAPH_OUTPUT, &value_info);
    let mut model = Vec::new();
    put_bytes_field(&mut model, field::MODEL_GRAPH, &graph);
    model
}

/// A `NodeProto` of the default domain with one input, one output and at most one int
/// attribute.
fn node(
    name: &str,
    op_type: &str,
    input: &str,
    output: &str,
    attribute: Option<(&str, i64)>,
) -> Vec<u8> {
    let mut node = Vec::new();
    put_bytes_field(&mut node, field::NODE_INPUT, input.as_bytes());
    put_bytes_field(&mut node, field::NODE_OUTPUT, output.as_bytes());
    put_bytes_field(&mut node, field::NODE_NAME, name.as_bytes());
    put_bytes_field(&mut node, field::NODE_OP_TYPE, op_type.as_bytes());
    if let Some((name, value)) = attribute {
        let mut attribute = Vec::new();
        put_bytes_field(&mut attribute, field::ATTRIBUTE_NAME, name.as_bytes());
        // int64 fields are varints of the two's-complement value.
        put_varint_field(&mut attribute, field::ATTRIBUTE_I, value as u64);
        put_varint_field(&mut attribute, field::ATTRIBUTE_TYPE, ATTRIBUTE_TYPE_INT);
        put_bytes_field(&mut node, field::NODE_ATTRIBUTE, &attribute);
    }
    node
}

/// Wire type 0 (varint).
fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// Wire type 2 (length-delimited): strings and embedded messages.
fn put_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_the_protobuf_encoding() {
        let encode = |v| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out
        };
        assert_eq!(encode(0), [0]);
        assert_eq!(encode(1), [1]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(encode(u64::MAX).len(), 10);
    }

    #[test]
    fn the_fragment_is_one_graph_field_of_a_model() {
        let fragment = pooled_output_fragment("627", "embedding");
        // Field 7, wire type 2, then the length of the rest.
        assert_eq!(fragment[0], (7 << 3) | 2);
        let mut len = 0usize;
        let mut shift = 0;
        let mut at = 1;
        loop {
            let byte = fragment[at];
            len |= usize::from(byte & 0x7f) << shift;
            at += 1;
            if byte < 0x80 {
                break;
            }
            shift += 7;
        }
        assert_eq!(at + len, fragment.len());
        let text = String::from_utf8_lossy(&fragment);
        for needle in ["GlobalAveragePool", "Flatten", "627", "embedding/pooled"] {
            assert!(text.contains(needle), "{needle}");
        }
    }
}
