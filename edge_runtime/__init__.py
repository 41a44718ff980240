"""On-device loop for nanoprune model bundles: capture -> preprocess -> infer -> postprocess -> out.

Runs on the Jetson Nano's Python 3.6 (numpy 1.19, OpenCV 4.1, TensorRT 8.2) and on any host
with onnxruntime. Never imports torch or `compress`; only `export.bundle` and `export.trt`.

    from edge_runtime.detector import BundleDetector
    det = BundleDetector("yolov3-tiny-person.onnx")          # or a .plan/.engine
    boxes, scores, classes = det.detect(cv2.imread("street.jpg"))

`python -m edge_runtime run --model m.onnx --source csi://0 --http 127.0.0.1:8080`
"""
