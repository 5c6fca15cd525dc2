//! Machine learning: text preprocessing, the ONNX sentiment session and behaviour-pattern detection, all
//! as pure functions or owned sessions driven by the actors. (Arrives with the sentiment-model work; the
//! module is declared now so the layout of ARCHITECTURE.md holds from the first commit.)
