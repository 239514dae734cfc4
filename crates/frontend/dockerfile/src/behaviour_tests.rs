//! Cross-module tests: seed Dockerfiles, typed lowering, actionable errors,
//! ARG/ENV scoping during expansion, and a no-panic property test.

use std::collections::BTreeMap;

use crate::error::ErrorKind;
use crate::expand::{ExpandOptions, ExpandedProgram, Platform, expand};
use crate::instructions::{
    CacheSharing, CommandLine, Healthcheck, Instruction, MountType, NetworkMode, Program, Source,
    lower,
};
use crate::parse;

fn program(src: &str) -> Program {
    lower(&parse(src).expect("parses")).expect("lowers")
}

fn lower_err(src: &str) -> crate::ParseError {
    lower(&parse(src).expect("parses")).expect_err("lowering must fail")
}

fn options(build_args: &[(&str, &str)]) -> ExpandOptions {
    ExpandOptions {
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target_platform: Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: "v8".into(),
        },
        build_platform: Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: String::new(),
        },
        base_envs: BTreeMap::new(),
    }
}

fn expanded(src: &str, build_args: &[(&str, &str)]) -> ExpandedProgram {
    expand(&program(src), &options(build_args)).expect("expands")
}

fn stage_instr(p: &ExpandedProgram, stage: usize, idx: usize) -> Instruction {
    p.stages[stage].commands[idx].command.instruction.clone()
}

const SEEDS: [&str; 7] = [
    "FROM ubuntu:latest\nLABEL maintainer jesang.myung@samsung.com\nRUN apt-get update -y && apt-get install -y python-pip python-dev build-essential\nCOPY . /app\nWORKDIR /app\nRUN pip install -r requirements.txt\nEXPOSE 5000\nENTRYPOINT [\"python\"]\nCMD [\"application.py\"]\n",
    "FROM ubuntu:latest\nLABEL maintainer jesang.myung@gmail.com  # 이메일 수정\nRUN apt-get update -y && apt-get install -y python-pip python-dev build-essential\nCOPY . /app\nWORKDIR /app\nRUN pip install -r requirements2.txt # 텍스트 파일 변경\nEXPOSE 5000\nENTRYPOINT [\"python\"]\nCMD [\"application.py\"]\n",
    "FROM ubuntu:latest\nRUN apt-get update\nRUN apt-get install -y mongodb-server\nRUN apt-get install -y nodejs\n",
    "FROM ubuntu AS build-env\nRUN apt-get update && apt-get install make\nADD . /src\nRUN cd /src && make\n\nFROM busybox\nCOPY --from=build-env /src/build/app /usr/local/bin/app\nEXPOSE 80\nENTRYPOINT /usr/local/bin/app\n",
    "FROM ubuntu:latest\nRUN apt-get update \\\n    && apt-get install -y mongodb-server \\\n    && apt-get install -y nodejs\n",
    "FROM python:2.7-alpine\nLABEL maintainer jesang.myung@samsung.com\nCOPY . /app\nWORKDIR /app\nRUN pip install -r requirements.txt\nEXPOSE 5000\nENTRYPOINT [\"python\"]\nCMD [\"application.py\"]\n",
    "FROM python:2.7-alpine\nLABEL maintainer jesang.myung@samsung.com\nCOPY requirements.txt /app/\nRUN pip install -r /app/requirements.txt\nCOPY . /app\nWORKDIR /app\nEXPOSE 5000\nENTRYPOINT [\"python\"]\nCMD [\"application.py\"]\n",
];

#[test]
fn seed_dockerfiles_parse_lower_and_expand() {
    for (i, seed) in SEEDS.iter().enumerate() {
        let df = parse(seed).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        let p = lower(&df).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        expand(&p, &options(&[])).unwrap_or_else(|e| panic!("seed {i}: {e}"));
    }
    // The legacy LABEL form keeps the rest of the line, comment included.
    let p = program(SEEDS[1]);
    let Instruction::Label(kvs) = &p.stages[0].commands[0].instruction else {
        panic!("label expected")
    };
    assert_eq!(kvs[0].key, "maintainer");
    assert_eq!(kvs[0].value, "jesang.myung@gmail.com  # 이메일 수정");
    assert!(
        p.warnings
            .iter()
            .any(|w| w.message.contains("legacy") && w.line == 2)
    );
    let p = program(SEEDS[3]);
    assert_eq!(p.stages.len(), 2);
    assert_eq!(p.stages[0].name.as_deref(), Some("build-env"));
    let Instruction::Copy(copy) = &p.stages[1].commands[0].instruction else {
        panic!("copy expected")
    };
    assert_eq!(copy.from.as_deref(), Some("build-env"));
    let Instruction::Entrypoint(CommandLine::Shell(cmd)) = &p.stages[1].commands[2].instruction
    else {
        panic!("shell-form entrypoint expected")
    };
    assert_eq!(cmd, "/usr/local/bin/app");
}

#[test]
fn typed_run_flags_and_mounts() {
    let p = program(
        "FROM a\nRUN --mount=type=cache,target=/root/.cache,sharing=locked,id=pip,uid=1000,mode=0755 --network=none --security=insecure pip install x\nRUN --mount=type=secret,id=tok,required --mount=type=tmpfs,target=/t,size=64m [\"ls\"]\n",
    );
    let Instruction::Run(run) = &p.stages[0].commands[0].instruction else {
        panic!("run")
    };
    let m = &run.mounts[0];
    assert_eq!(m.kind, MountType::Cache);
    assert_eq!(m.target.as_deref(), Some("/root/.cache"));
    assert_eq!(m.sharing, Some(CacheSharing::Locked));
    assert_eq!((m.uid, m.mode), (Some(1000), Some(0o755)));
    assert_eq!(run.network, Some(NetworkMode::None));
    assert_eq!(run.command, CommandLine::Shell("pip install x".into()));
    let Instruction::Run(run) = &p.stages[0].commands[1].instruction else {
        panic!("run")
    };
    assert_eq!(run.mounts[0].kind, MountType::Secret);
    assert!(run.mounts[0].required);
    assert_eq!(run.mounts[1].size, Some(64 << 20));
    assert_eq!(run.command, CommandLine::Exec(vec!["ls".into()]));
}

#[test]
fn typed_healthcheck_copy_add_arg_onbuild() {
    let p = program(
        "ARG A=1 B\nFROM a AS Base\nHEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://x\nHEALTHCHECK NONE\nADD --checksum=sha256:abc --keep-git-dir=true --link https://x/y.tar /z\nCOPY --parents --exclude=*.md --chmod=644 <<EOF a /dst/\nhello\nEOF\nONBUILD RUN make\nSHELL [\"/bin/bash\", \"-c\"]\nSTOPSIGNAL SIGTERM\nEXPOSE 80 53/udp 8000-8010/sctp\n",
    );
    let Instruction::Arg(defs) = &p.meta_args[0].instruction else {
        panic!("arg")
    };
    assert_eq!(defs.len(), 2);
    assert_eq!(defs[0].default.as_deref(), Some("1"));
    assert_eq!(defs[1].default, None);
    assert_eq!(p.stages[0].name.as_deref(), Some("base"));
    let cmds = &p.stages[0].commands;
    let Instruction::Healthcheck(Healthcheck::Cmd {
        interval,
        retries,
        command,
        ..
    }) = &cmds[0].instruction
    else {
        panic!("healthcheck")
    };
    assert_eq!(*interval, Some(std::time::Duration::from_secs(90)));
    assert_eq!(*retries, Some(3));
    assert_eq!(*command, CommandLine::Shell("curl -f http://x".into()));
    assert_eq!(
        cmds[1].instruction,
        Instruction::Healthcheck(Healthcheck::None)
    );
    let Instruction::Add(add) = &cmds[2].instruction else {
        panic!("add")
    };
    assert_eq!(add.keep_git_dir, Some(true));
    assert!(add.link);
    let Instruction::Copy(copy) = &cmds[3].instruction else {
        panic!("copy")
    };
    assert!(copy.parents);
    assert_eq!(copy.exclude, vec!["*.md"]);
    assert_eq!(
        copy.sources[0],
        Source::Heredoc {
            name: "EOF".into(),
            content: "hello\n".into(),
            expand: true
        }
    );
    assert!(
        matches!(&cmds[4].instruction, Instruction::Onbuild { expression, .. } if expression == "RUN make")
    );
    // Serializable with a deterministic shape.
    let json = serde_json::to_string(&p).expect("serializes");
    assert!(json.contains("\"instruction\":\"HEALTHCHECK\""));
}

#[test]
fn actionable_errors() {
    let src = "FROM a\nRUN x\nRUNN echo hi\n";
    let err = lower_err(src);
    assert_eq!(err.kind, ErrorKind::UnknownInstruction);
    assert_eq!(
        err.render("Dockerfile", src),
        "error: unknown instruction \"RUNN\"\n  --> Dockerfile:3:1\n   |\n 3 | RUNN echo hi\n   | ^^^^ did you mean \"RUN\"?\n   = help: valid instructions are ADD, ARG, CMD, COPY, ENTRYPOINT, ENV, EXPOSE, FROM, HEALTHCHECK, LABEL, MAINTAINER, ONBUILD, RUN, SHELL, STOPSIGNAL, USER, VOLUME, WORKDIR\n"
    );

    let err = parse("FROM a\nCMD [\"a\", 1]\n").expect_err("non-string JSON");
    assert_eq!(
        (err.kind, err.line, err.column),
        (ErrorKind::JsonNotStringArray, 2, 5)
    );
    assert!(err.help.is_some());

    let err = lower_err("FROM a\nRUN --from=x echo\n");
    assert_eq!(
        (err.kind, err.line, err.column),
        (ErrorKind::UnknownFlag, 2, 5)
    );
    assert!(err.help.as_deref().unwrap_or("").contains("--mount"));
    let err = lower_err("FROM --chown=1 a\n");
    assert_eq!(err.kind, ErrorKind::UnknownFlag);
    assert_eq!(err.span.end - err.span.start, "--chown".len());

    let err = parse("FROM a\nCOPY <<EOF /x\nbody\n").expect_err("unterminated heredoc");
    assert_eq!(err.kind, ErrorKind::UnterminatedHeredoc);

    let src = "FROM a\nWORKDIR ${X\n";
    let err = expand(&program(src), &options(&[])).expect_err("unterminated ${");
    assert_eq!((err.kind, err.line), (ErrorKind::Expansion, 2));
    assert!(err.render("Dockerfile", src).contains(" 2 | WORKDIR ${X"));

    assert_eq!(
        parse("").expect_err("empty").kind,
        ErrorKind::EmptyDockerfile
    );
    assert_eq!(
        parse("# only\n\n# comments\n").expect_err("comments").kind,
        ErrorKind::NoInstructions
    );

    for bad in [
        "ONBUILD ONBUILD RUN x",
        "ONBUILD FROM x",
        "ONBUILD MAINTAINER me",
    ] {
        let err = lower_err(&format!("FROM a\n{bad}\n"));
        assert_eq!(err.kind, ErrorKind::DisallowedOnbuild, "{bad}");
        assert_eq!(err.column, 9, "{bad}");
    }

    let err = lower_err("FROM a AS x\nFROM b AS X\n");
    assert_eq!((err.kind, err.line), (ErrorKind::DuplicateStageName, 2));
    assert!(err.label.as_deref().unwrap_or("").contains("line 1"));

    let err = parse("FROM a\nENV PATH\n").expect_err("env without value");
    assert_eq!((err.kind, err.line), (ErrorKind::InvalidArguments, 2));

    let err = lower_err("RUN x\nFROM a\n");
    assert_eq!(err.kind, ErrorKind::InstructionBeforeFrom);
    let err = parse("# escape=x\nFROM a\n").expect_err("bad escape");
    assert_eq!(err.kind, ErrorKind::InvalidDirective);
    let err = parse("# syntax=a\n# syntax=b\nFROM a\n").expect_err("repeat");
    assert_eq!((err.kind, err.line), (ErrorKind::InvalidDirective, 2));
}

#[test]
fn warnings_not_errors() {
    let df = parse("FROM a\nMAINTAINER me\nENV A b\nRUN x \\\n\n  y\n").expect("parses");
    assert_eq!(df.warnings.len(), 1);
    assert_eq!(df.warnings[0].line, 6);
    let p = lower(&df).expect("lowers");
    let lines: Vec<usize> = p.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, vec![6, 2, 3]);
}

#[test]
fn meta_args_only_reach_from_unless_redeclared() {
    let p = expanded(
        "ARG VERSION=latest\nARG OTHER=o\nFROM busybox:$VERSION\nARG VERSION\nRUN echo\nWORKDIR /$VERSION/$OTHER\n",
        &[],
    );
    assert_eq!(p.stages[0].from.image, "busybox:latest");
    assert_eq!(
        stage_instr(&p, 0, 2),
        Instruction::Workdir("/latest/".into())
    );
    assert_eq!(
        p.stages[0].commands[1].run_args,
        vec![("VERSION".to_string(), "latest".to_string())]
    );
}

#[test]
fn build_args_override_declared_args_only() {
    let p = expanded(
        "FROM a\nARG USER=some_user\nUSER $USER\nUSER ${UNDECLARED:-none}\n",
        &[
            ("USER", "what_user"),
            ("UNDECLARED", "x"),
            ("HTTP_PROXY", "http://p"),
        ],
    );
    assert_eq!(stage_instr(&p, 0, 1), Instruction::User("what_user".into()));
    assert_eq!(stage_instr(&p, 0, 2), Instruction::User("none".into()));
    assert_eq!(p.unused_build_args, vec!["UNDECLARED".to_string()]);
}

#[test]
fn env_overrides_arg_and_expands_before_instruction() {
    let p = expanded(
        "FROM ubuntu\nARG CONT_IMG_VER\nENV CONT_IMG_VER=v1.0.0\nRUN echo $CONT_IMG_VER\nWORKDIR /$CONT_IMG_VER\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n",
        &[("CONT_IMG_VER", "v2.0.1")],
    );
    assert_eq!(
        stage_instr(&p, 0, 3),
        Instruction::Workdir("/v1.0.0".into())
    );
    assert!(p.stages[0].commands[2].run_args.is_empty());
    let env: BTreeMap<_, _> = p.stages[0].env.iter().cloned().collect();
    assert_eq!(env["def"], "hello");
    assert_eq!(env["ghi"], "bye");
}

#[test]
fn env_is_inherited_from_stage_and_base_image() {
    let src = "FROM img AS base\nENV A=1\nFROM base\nWORKDIR /$A/$PATH\nFROM other\nWORKDIR /$A\n";
    let mut opts = options(&[]);
    opts.base_envs
        .insert(0, vec![("PATH".into(), "/bin".into())]);
    opts.base_envs.insert(2, vec![("A".into(), "img".into())]);
    let p = expand(&program(src), &opts).expect("expands");
    assert_eq!(p.stages[1].base_stage, Some(0));
    assert_eq!(
        stage_instr(&p, 1, 0),
        Instruction::Workdir("/1//bin".into())
    );
    assert_eq!(stage_instr(&p, 2, 0), Instruction::Workdir("/img".into()));
    // ARGs are not inherited between stages.
    let p = expanded("FROM a AS one\nARG X=1\nFROM one\nWORKDIR /$X\n", &[]);
    assert_eq!(stage_instr(&p, 1, 0), Instruction::Workdir("/".into()));
}

#[test]
fn platform_args_are_meta_args() {
    let p = expanded(
        "FROM --platform=$BUILDPLATFORM golang AS build\nARG TARGETOS TARGETARCH\nWORKDIR /$TARGETOS/$TARGETARCH/$TARGETVARIANT\n",
        &[],
    );
    assert_eq!(p.stages[0].from.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(
        stage_instr(&p, 0, 1),
        Instruction::Workdir("/linux/arm64/".into())
    );
}

#[test]
fn expansion_per_instruction() {
    let p = expanded(
        "ARG IMG=alpine\nFROM $IMG\nARG V=1 N=app\nLABEL \"k$V\"=\"a b $V\"\nCOPY --chown=$N:$N --from=$N src/$V /dst/$V\nCOPY <<EOF <<'RAW' /x/\n$V\nEOF\n$V\nRAW\nRUN --mount=type=cache,target=/c/$V echo $V\nCMD echo $V\nEXPOSE ${V}000\nVOLUME /v/$V\nSTOPSIGNAL SIG$N\nONBUILD WORKDIR /$V\n",
        &[],
    );
    assert_eq!(p.stages[0].from.image, "alpine");
    let Instruction::Label(kvs) = stage_instr(&p, 0, 1) else {
        panic!()
    };
    assert_eq!(
        (kvs[0].key.as_str(), kvs[0].value.as_str()),
        ("k1", "a b 1")
    );
    let Instruction::Copy(copy) = stage_instr(&p, 0, 2) else {
        panic!()
    };
    assert_eq!(copy.chown.as_deref(), Some("app:app"));
    assert_eq!(copy.from.as_deref(), Some("app"));
    assert_eq!(copy.dest, "/dst/1");
    let Instruction::Copy(copy) = stage_instr(&p, 0, 3) else {
        panic!()
    };
    assert!(matches!(&copy.sources[0], Source::Heredoc { content, .. } if content == "1\n"));
    assert!(matches!(&copy.sources[1], Source::Heredoc { content, .. } if content == "$V\n"));
    let Instruction::Run(run) = stage_instr(&p, 0, 4) else {
        panic!()
    };
    assert_eq!(run.mounts[0].target.as_deref(), Some("/c/1"));
    assert_eq!(run.command, CommandLine::Shell("echo $V".into()));
    assert_eq!(
        stage_instr(&p, 0, 5),
        Instruction::Cmd(CommandLine::Shell("echo $V".into()))
    );
    assert_eq!(
        stage_instr(&p, 0, 6),
        Instruction::Expose(vec!["1000".into()])
    );
    assert_eq!(
        stage_instr(&p, 0, 7),
        Instruction::Volume(vec!["/v/1".into()])
    );
    assert_eq!(
        stage_instr(&p, 0, 8),
        Instruction::StopSignal("SIGapp".into())
    );
    assert!(
        matches!(stage_instr(&p, 0, 9), Instruction::Onbuild { expression, .. } if expression == "WORKDIR /$V")
    );
}

mod no_panic {
    use proptest::prelude::*;

    const FRAGMENTS: [&str; 34] = [
        "FROM ",
        "RUN ",
        "COPY ",
        "ADD ",
        "ENV ",
        "LABEL ",
        "ARG ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "CMD ",
        "SHELL ",
        "\\",
        "`",
        "<<",
        "<<-",
        "EOF",
        "'",
        "\"",
        "[",
        "]",
        "${",
        "}",
        "$",
        "\n",
        "\r\n",
        " ",
        "\t",
        "=",
        "--",
        "# escape=`\n",
        "é",
        "😀",
        "\u{feff}",
        "a",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn never_panics(parts in proptest::collection::vec(0usize..FRAGMENTS.len(), 0..40)) {
            let src: String = parts.iter().map(|i| FRAGMENTS[*i]).collect();
            if let Ok(df) = crate::parse(&src) {
                let _ = df.dump();
                if let Ok(p) = crate::lower(&df) {
                    let _ = crate::expand(&p, &crate::ExpandOptions::default());
                }
            } else if let Err(e) = crate::parse(&src) {
                let _ = e.render("Dockerfile", &src);
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(src in "\\PC{0,200}") {
            if let Ok(df) = crate::parse(&src)
                && let Ok(p) = crate::lower(&df)
            {
                let _ = crate::expand(&p, &crate::ExpandOptions::default());
            }
        }
    }
}
