{
  "targets": [
    {
      "target_name": "ringreduce_kernels",
      "sources": [
        "src/addon.cc",
        "src/cpu.cc",
        "src/kernels_portable.cc",
        "src/kernels_x86.cc",
        "src/shm.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      # Bit-identical floats: no FMA contraction, no fast-math. No -mavx2/-march here: the AVX2
      # code is confined to kernels_x86.cc by a target pragma and chosen at run time.
      "cflags_cc": ["-O3", "-ffp-contract=off", "-fno-fast-math"],
      "xcode_settings": {
        "OTHER_CPLUSPLUSFLAGS": ["-O3", "-ffp-contract=off", "-fno-fast-math"]
      },
      "msvs_settings": {
        "VCCLCompilerTool": { "AdditionalOptions": ["/fp:precise", "/O2"] }
      }
    }
  ]
}
