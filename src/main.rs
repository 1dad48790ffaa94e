//! The `sixpn` binary: a thin shell around [`sixpn::cli`]. It parses the command line, sets up
//! logging on stderr, runs the command and turns an error into one line and an exit code that
//! tells its kind (see `sixpn::cli::exit`).

use std::process::ExitCode;

use clap::Parser as _;
use clap::error::ErrorKind;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match sixpn::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version are long by nature; usage errors are one line like every other error.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => {
            eprintln!("{}", sixpn::cli::usage_error_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    // clap allows only text|json.
    let format = cli.log_format.as_deref().and_then(|f| f.parse().ok());
    if let Err(e) = sixpn::logging::init_logging(format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match sixpn::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error chain or the server's message held.
            eprintln!("error: {}", sixpn::cli::error_line(&e));
            // The code tells the kind of failure apart (README "Exit codes", `sixpn --help`).
            ExitCode::from(sixpn::cli::exit_code(&e))
        }
    }
}
