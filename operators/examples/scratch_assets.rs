use tessera_operators::*;
fn main() {
    for f in ["dog.jpg", "small-vehicles1.jpeg"] {
        let bytes = std::fs::read(format!("/work/shared/assets/images/{f}")).expect("read");
        let t = std::time::Instant::now();
        let img = decode_image(&bytes, &DecodeLimits::default()).expect("decode");
        let dt = t.elapsed();
        let grid = TilingConfig::default().grid(416, 416);
        let tiles = grid.tiles(img.width(), img.height());
        let mut p = Preprocessor::new(PreprocessSpec {
            width: 416,
            height: 416,
            resize: ResizeMode::Letterbox,
            pad_value: 114,
            channel_order: ChannelOrder::Bgr,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        });
        let mut out = vec![0.0; p.tensor_len()];
        let t = std::time::Instant::now();
        for tile in &tiles {
            p.prepare_into(&img, tile.rect, &mut out).expect("prep");
        }
        println!(
            "{f}: {}x{} decode {:?}, {} tiles preprocess {:?}",
            img.width(),
            img.height(),
            dt,
            tiles.len(),
            t.elapsed()
        );
        let mut img = img;
        draw_detections(
            &mut img,
            &[Detection {
                class_id: 16,
                score: 0.9,
                bbox: BBox::new(100., 100., 300., 300.),
            }],
            |_| "dog".into(),
        );
    }
}
