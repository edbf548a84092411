# prebuilt.sh: sourced by tests/gpu/run --prebuilt DIR. Unpacks the pack
# tests/gpu/pack.sh made (DIR/kiln-gpu.tar.xz, or an older pack's .tar.gz) and makes it runnable on a
# machine without our libraries: the binaries' wrappers set LD_LIBRARY_PATH
# to the packed libraries themselves; here the source path compiled into
# them (KILN_SOURCE_DIR, where the GPT fixture reads its safetensors) is made
# to hold them, as symbolic links to the pack's copies.

# gpu_pack_unpack DIR: prints the build dir to run from (the pack's build/),
# or says what is wrong on stderr and returns 1.
# unpack_tar FILE DEST: tar's own xz or gzip, else Python's tarfile (a
# machine without the xz program)
unpack_tar() {
    if [[ $1 == *.xz ]] && ! command -v xz >/dev/null 2>&1; then
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
    else
        tar xf "$1" -C "$2"
    fi
}

gpu_pack_unpack() {
    local dir=$1 tgz=$1/kiln-gpu.tar.xz
    local dest=${TMPDIR:-/tmp}/kiln-gpu-pack
    [ -f "$tgz" ] || tgz=$dir/kiln-gpu.tar.gz
    if [ ! -f "$tgz" ]; then
        echo "tests/gpu/run: no $dir/kiln-gpu.tar.xz: run tests/gpu/pack.sh where the project builds" >&2
        return 1
    fi
    rm -rf "$dest" && mkdir -p "$dest" && unpack_tar "$tgz" "$dest" || {
        echo "tests/gpu/run: cannot unpack $tgz into $dest" >&2
        return 1
    }
    local pk=$dest/kiln-gpu src
    src=$(cat "$pk/SOURCE_DIR")
    sed 's/^/pack: /' "$pk/MANIFEST" >&2
    if [ ! -e "$src" ] && [ ! -L "$src" ]; then
        mkdir -p "$(dirname "$src")" && ln -s "$pk/src" "$src" || {
            echo "tests/gpu/run: cannot link $src (KILN_SOURCE_DIR of the pack) to $pk/src" >&2
            return 1
        }
        echo "pack: $src -> $pk/src (the binaries' KILN_SOURCE_DIR)" >&2
    fi
    # a source path that exists there but lacks the files (another checkout,
    # an empty folder) gets links to the pack's copies, file by file
    local f
    for f in tests/nn/gpt_fixture_model.safetensors tests/nn/gpt_fixture_expected.safetensors; do
        [ -r "$src/$f" ] && continue
        mkdir -p "$(dirname "$src/$f")" && ln -sf "$pk/src/$f" "$src/$f" || {
            echo "tests/gpu/run: $src has no $f and it cannot be linked there" >&2
            return 1
        }
        echo "pack: $src/$f -> $pk/src/$f" >&2
    done
    echo "$pk/build"
}
