fn main() { println!("fractalic-publisher"); }
