//! Minimal driver with the `stowage lint -f FILE --format json CONTEXT`
//! argument shape, so the hadolint agreement script can run without the CLI.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let file = args
        .iter()
        .position(|a| a == "-f")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let context = args.last().cloned().unwrap_or_default();
    let Ok(source) = std::fs::read_to_string(&file) else {
        return std::process::ExitCode::from(2);
    };
    let options = stowage_lint::LintOptions {
        context_dir: Some(context.into()),
        dockerfile_path: Some(file.clone().into()),
        ..Default::default()
    };
    match stowage_lint::lint(&source, &options) {
        Ok(report) => {
            print!("{}", stowage_lint::render_json(&report, &file));
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::from(1)
        }
    }
}
